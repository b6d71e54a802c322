"""UPerNet + Swin-T trains on real pixels: 30 iterations with mmengine's Runner on the ISPRS Potsdam and Vaihingen
samples in ``../shared/data`` (skipped when that folder is absent, as in a user's clone) and the loss falls."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import SHARED_DATA
from mmengine.config import Config

from densekit.apis import train

DATA = SHARED_DATA
SETS = ("potsdam", "vaihingen")
CLASSES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")
CROP = (256, 256)
ITERS = 30

pytestmark = pytest.mark.skipif(
    not all((DATA / "seg" / name / sub).is_dir() for name in SETS for sub in ("images", "masks")),
    reason=f"real samples not found under {DATA}/seg (potsdam, vaihingen)",
)


def _dataset(name: str) -> dict:
    return dict(type="SegDataset", data_root=str(DATA / "seg" / name), img_dir="images", ann_dir="masks",
                img_suffix=".png", seg_map_suffix=".png", classes=CLASSES,
                pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                          dict(type="RandomCrop", crop_size=CROP), dict(type="RandomFlip", prob=0.5),
                          dict(type="PackSegInputs")])


def _config(work_dir: Path) -> Config:
    norm = "BN"
    return Config(dict(
        default_scope="densekit",
        work_dir=str(work_dir),
        model=dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=CROP, pad_val=0,
                                   seg_pad_val=255),
            backbone=dict(type="swin_t", window_size=7, drop_path_rate=0.1),
            decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], channels=128, dropout_ratio=0.1,
                             num_classes=len(CLASSES), norm=norm),
            auxiliary_head=dict(type="FCNHead", in_channels=384, in_index=2, channels=64, num_convs=1,
                                concat_input=False, dropout_ratio=0.1, num_classes=len(CLASSES), norm=norm,
                                loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)),
        ),
        train_dataloader=dict(batch_size=2, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dict(type="ConcatDataset", datasets=[_dataset(n) for n in SETS])),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01),
                           clip_grad=dict(max_norm=5.0)),
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5)],
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=ITERS),
        default_hooks=dict(logger=dict(type="LoggerHook", interval=10), checkpoint=None),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo")),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
    ))


def test_upernet_swin_t_loss_falls_in_30_iterations_on_potsdam_and_vaihingen(tmp_path):
    start = time.perf_counter()
    runner = train(_config(tmp_path / "work"), work_dir=str(tmp_path / "work"))
    seconds = time.perf_counter() - start
    assert len(runner.train_dataloader.dataset) == 2
    assert runner.train_dataloader.dataset.metainfo["classes"] == CLASSES
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)
    assert len(losses) == ITERS and np.isfinite(losses).all()
    first, last = losses[0], losses[-5:].mean()  # the last five: one batch of random crops is noisy
    print(f"\nreal samples: loss {first:.3f} -> {last:.3f} (last 5 mean), drop {1 - last / first:.0%}, "
          f"{ITERS} iterations in {seconds:.1f} s")
    assert last <= 0.7 * first, f"loss fell only from {first:.3f} to {last:.3f}: {np.round(losses, 3).tolist()}"
