"""The LR-ASPP MobileNetV3 and UPerNet Twins-SVT-S recipes train, test and infer: each config (its model and
optimizer, the data moved to the Cityscapes sample in ``../shared/data``, skipped when absent) trains a few
iterations with a falling loss, its checkpoint evaluates through ``densekit.apis.test`` and infers one image.

Changed from the recipe for a 128x256 image on a 2-core CPU: the crop, no random resize, the schedule (a constant
lr, higher than the recipe's for a few iterations), and LR-ASPP's image pool (kernel 12, stride (4, 5): mmseg's 49,
(16, 20) on the 64x128 stride-8 map of a 512x1024 crop, scaled to the 16x32 map here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import SHARED_DATA
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from densekit import apis
from densekit.registry import MODELS
from densekit.structures import SegDataSample

REPO = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA / "seg" / "cityscapes"
ITERS = 12
CROP = (128, 256)

pytestmark = pytest.mark.filterwarnings("ignore:norm='SyncBN' outside distributed training")
needs_sample = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"Cityscapes sample not found under {DATA}")
RECIPES = ["lraspp_mobilenetv3_large_cityscapes", "upernet_twins_svt_s_ade"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_and_steps(name):
    """Fast: the config's own model and optimizer take two steps on a random 128x256 batch, loss finite."""
    cfg = _config(name, Path("unused"))
    init_default_scope("densekit")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    x = torch.randint(0, 256, (3, *CROP), dtype=torch.uint8)
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.randint(0, cfg.model.decode_head.num_classes, (1, *CROP)))
    data = dict(inputs=[x, x.flip(-1)], data_samples=[sample, sample])
    for _ in range(2):
        losses = model.train_step(data, wrapper)
        assert all(torch.isfinite(v).all() for v in losses.values())


def _config(name: str, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(REPO / "configs" / f"{name}.py"))
    cfg.work_dir = str(work_dir)
    cfg.model.data_preprocessor.size = CROP
    cfg.model.test_cfg = dict(mode="whole")
    if cfg.model.decode_head.type == "LRASPPHead":
        cfg.model.decode_head.update(pool_kernel=12, pool_stride=(4, 5))
    dataset = dict(type="SegDataset", data_root=str(DATA), img_dir="images", ann_dir="masks",
                   img_suffix="_leftImg8bit.png", seg_map_suffix="_gtFine_labelTrainIds.png",
                   classes=[str(i) for i in range(cfg.model.decode_head.num_classes)])
    train_steps = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="RandomFlip", prob=0.5),
                   dict(type="PackSegInputs")]
    test_steps = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    cfg.train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                                dataset=dict(dataset, pipeline=train_steps))
    cfg.test_dataloader = dict(batch_size=1, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                               dataset=dict(dataset, pipeline=test_steps))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.optim_wrapper.optimizer.lr *= 5
    cfg.param_scheduler = []
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=ITERS)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type="SafeCheckpointHook", by_epoch=False, interval=ITERS)
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
    return cfg


def _train_test_infer(name: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    runner = apis.train(_config(name, work), work_dir=str(work))
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)
    assert len(losses) == ITERS and np.isfinite(losses).all()
    first, last = losses[:2].mean(), losses[-3:].mean()
    assert last < 0.9 * first, f"{name}: loss {np.round(losses, 3).tolist()}"
    checkpoint = work / f"iter_{ITERS}.pth"
    metrics = apis.test(_config(name, tmp_path / "test"), str(checkpoint), work_dir=str(tmp_path / "test"))
    assert 0.0 <= metrics["mIoU"] <= 100.0
    cfg = _config(name, tmp_path / "infer")
    cfg.test_pipeline = [dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]
    model = apis.init_model(cfg, str(checkpoint))
    image = next((DATA / "images").iterdir())
    result = apis.inference_model(model, str(image))
    assert tuple(result.pred_sem_seg.data.shape) == (1, *CROP)


@pytest.mark.slow
@needs_sample
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_tests_infers(name, tmp_path):
    _train_test_infer(name, tmp_path)
