"""A seconds-long training config for tests that launch ``tools/train.py``: the demo segmentation config
(``configs/upernet_swin_t_demo.py``) with timm's ``test_convnext`` backbone (0.2 M parameters, LayerNorms
only), a 16-channel UPerNet head, 64x64 images, no validation, and a logged loss every iteration."""
from __future__ import annotations

from pathlib import Path

from helpers.demo import logged_runs

from densekit.datasets.seg.demo import make_demo_dataset
from densekit.engine.demo import DEMO_CONFIG, load_demo_config

SIZE = (64, 64)
NUM_TRAIN = 8


def make_tiny_data(root: Path) -> Path:
    """Generate the tiny demo dataset once, before any training process starts (no generation races)."""
    make_demo_dataset(str(root), num_train=NUM_TRAIN, num_val=2, size=SIZE, seed=0, progress=False)
    return root


def tiny_config(path: Path, data_root: Path, *, max_iters: int, batch_size: int, checkpoint_interval: int,
                exact_split: bool = False) -> Path:
    """Write the config to ``path`` and return it.

    ``exact_split`` makes a batch of ``2b`` on one process and ``b`` on each of two processes take the same
    gradient step: no random transforms (both ranks would draw the same crops for different images), all
    pixels labelled (``reduce_zero_label=False``, 7 classes: each rank's mean cross-entropy then has the same
    denominator), no BatchNorm and no dropout in the heads, plain SGD without warm-up or clipping.
    """
    cfg = load_demo_config(DEMO_CONFIG, data_root=str(data_root), max_iters=max_iters, val_interval=max_iters,
                           crop_size=SIZE[0], batch_size=batch_size,
                           dataset=dict(num_train=NUM_TRAIN, num_val=2, size=SIZE))
    cfg.model.backbone = dict(type="test_convnext")
    cfg.model.decode_head.update(in_channels=[24, 32, 48, 64], channels=16)
    cfg.model.auxiliary_head.update(in_channels=48, channels=8)
    loader = cfg.train_dataloader
    loader.num_workers, loader.persistent_workers = 0, False
    for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
        cfg[key] = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor = dict(by_epoch=False, window_size=1)  # the loss of each iteration, not a moving mean
    cfg.default_hooks.checkpoint = dict(type="SafeCheckpointHook", by_epoch=False, interval=checkpoint_interval)
    # A plain linear decay from a useful lr: the losses then depend on the weights, the optimizer state and the
    # schedule, which a resume must all restore (the demo's warm-up, shrunk to a few iterations, leaves lr ~1e-6).
    cfg.param_scheduler = [dict(type="PolyLR", eta_min=0.0, power=1.0, begin=0, end=max_iters, by_epoch=False)]
    if exact_split:
        loader.sampler = dict(type="InfiniteSampler", shuffle=True, seed=0)
        ds = loader.dataset
        loader.dataset = dict(type="SegDataset", data_root=ds.data_root, img_dir=ds.img_dir, ann_dir=ds.ann_dir,
                              img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=False,
                              classes=["boundary", "background", "disc", "rectangle", "triangle", "stripes",
                                       "checker"],
                              pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                        dict(type="PackSegInputs")])
        for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
            head.update(num_classes=7, norm=None, dropout_ratio=0.0)
        cfg.optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.05, momentum=0.9))
        cfg.param_scheduler = []
    cfg.dump(str(path))
    return path


def logged_losses(work_dir: Path) -> list[dict[int, float]]:
    """``{iteration: loss}`` of each run in ``work_dir`` (mmengine's ``vis_data/scalars.json``), oldest first."""
    return [{row["iter"]: row["loss"] for row in run} for run in logged_runs(work_dir)]
