"""``configs/rpn_vit_b_sfp_coco.py`` end to end (slow): a few training iterations of the real config's model and
optimizer on generated demo detection data with a falling loss, then ``densekit test`` and ``densekit infer``
exit 0 on the checkpoint it wrote."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from densekit.apis import load_config, train
from densekit.datasets.det.demo import make_demo_det_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "rpn_vit_b_sfp_coco.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
SIDE = 128  # 8x8 patches of 16: ViT-B stays cheap on a CPU, the pyramid still spans strides 4..64


def _config(data_root: Path, work: Path, iters: int) -> Config:
    """The recipe's model and optimizer (lr raised to 2e-4, constant: the 500-iteration warm-up would keep a few
    iterations at lr ~0) on two generated 128x128 images; the ViT keeps its position grid at 128 (img_size)."""
    cfg = load_config(str(CONFIG))
    cfg.model.backbone.update(img_size=SIDE, drop_path_rate=0.0)
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadDetAnnotations"), dict(type="PackDetInputs")]
    for loader, split in ((cfg.train_dataloader, "train"), (cfg.val_dataloader, "val")):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = dict(type="DemoDetDataset", data_root=str(data_root), split=split, num_train=2, num_val=2,
                              size=(SIDE, SIDE), test_mode=split == "val", pipeline=pipeline)
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.param_scheduler = []
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1, log_metric_by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type="SafeCheckpointHook", by_epoch=False, interval=iters)
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
    cfg.work_dir = str(work)
    return cfg


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densekit", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # ViT-B trains 8 iterations, then two CLI runs: about a minute on a shared 2-core CPU
def test_rpn_vit_config_trains_with_a_falling_loss_then_tests_and_infers(tmp_path):
    data = tmp_path / "det"
    make_demo_det_dataset(str(data), num_train=2, num_val=2, size=(SIDE, SIDE))
    iters, work = 8, tmp_path / "work"
    cfg = _config(data, work, iters)
    runner = train(cfg, work_dir=str(work))
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)
    assert len(losses) == iters and np.isfinite(losses).all()
    first, last = losses[:2].mean(), losses[-2:].mean()
    print(f"\nrpn_vit_b_sfp_coco: loss {np.round(losses, 3).tolist()}")
    assert last < 0.9 * first, f"loss fell only from {first:.3f} to {last:.3f}"
    config, checkpoint = tmp_path / "rpn_vit.py", work / f"iter_{iters}.pth"
    cfg.dump(str(config))
    tested = _cli("test", config, checkpoint, "--work-dir", tmp_path / "test")
    assert tested.returncode == 0, tested.stderr[-3000:]
    image = sorted((data / "images" / "val").iterdir())[0]
    inferred = _cli("infer", config, checkpoint, image, "--out-dir", tmp_path / "out")
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    assert any((tmp_path / "out").iterdir())
