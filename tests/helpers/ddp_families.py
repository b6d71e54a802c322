"""Run under torchrun with two CPU processes: train each model family (UPerNet with BatchNorm heads asked as
``SyncBN``, RPN, Swin-Unet; slim models, 64x64 inputs) for two steps with ``launcher="pytorch"`` (DDP over gloo),
one family after the other in the same process group, and have rank 0 write what each rank saw to a JSON file.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/ddp_families.py OUT_DIR

One launch for the three families: the two processes import torch, timm and mmengine once (most of the time).
Each rank reports, per family: the loss of every step, how far its parameters are from the other rank's before and
after training, how far the steps moved them, and the running mean of its first BatchNorm, if any.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config
from tiny_train import make_tiny_data, tiny_config

from densekit.datasets.det.demo import make_demo_det_dataset
from densekit.engine.runner import build_runner

ITERS = 2
SIZE = (64, 64)


def make_data(root: Path) -> None:
    """Every family's generated data, written once (by rank 0) before any rank builds a dataset."""
    make_tiny_data(root / "seg_data")
    make_demo_det_dataset(str(root / "det_data"), num_train=8, num_val=2, size=SIZE)
    write_volumes(root / "medical_data")


def upernet_config(root: Path) -> Config:
    """The tiny demo UPerNet (timm test_convnext backbone) with BatchNorm in both heads, asked as ``SyncBN``."""
    path = tiny_config(root / "upernet.py", root / "seg_data", max_iters=ITERS, batch_size=2,
                       checkpoint_interval=ITERS)
    cfg = Config.fromfile(str(path))
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.norm = "SyncBN"
    return cfg


def rpn_config(root: Path) -> Config:
    """configs/rpn_regnetx_002_fpn_demo.py on 8 generated 64x64 detection images, no validation."""
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / "configs" / "rpn_regnetx_002_fpn_demo.py"))
    loader = cfg.train_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader.dataset.update(data_root=str(root / "det_data"), num_train=8, num_val=2, size=SIZE)
    return _short(cfg)


def write_volumes(root: Path) -> tuple[list[str], list[str]]:
    """Two 64x64x4 MR-like volumes with a 3-class label each (a bright disc and a dark square)."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for case in range(2):
        label = np.zeros((64, 64, 4), np.uint8)
        yy, xx = np.mgrid[:64, :64]
        label[(yy - 20 - 8 * case) ** 2 + (xx - 24) ** 2 < 100] = 1
        label[40:56, 36 + 4 * case:52 + 4 * case] = 2
        image = rng.normal(100, 10, label.shape) + 80.0 * (label == 1) - 60.0 * (label == 2)
        for array, folder, out in ((image.astype(np.float32), "images", images), (label, "labels", labels)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            path = root / folder / f"case_{case}.nii.gz"
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
            out.append(str(path))
    return images, labels


def swin_unet_config(root: Path) -> Config:
    """A slim Swin-Unet (embed 24, window 4, one block a stage) on 64x64 slices of two generated volumes."""
    images = [str(root / "medical_data" / "images" / f"case_{case}.nii.gz") for case in range(2)]
    labels = [str(root / "medical_data" / "labels" / f"case_{case}.nii.gz") for case in range(2)]
    dataset = dict(type="NiftiSliceDataset", images=images, labels=labels, classes=["bg", "disc", "square"],
                   window="mr", pipeline=[dict(type="RandomGenerator", output_size=SIZE),
                                          dict(type="PackMedicalInputs")])
    cfg = Config(dict(
        default_scope="densekit",
        model=dict(
            type="SwinUnet",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[0.0], std=[1.0], bgr_to_rgb=False, size=SIZE),
            backbone=dict(type="SwinTransformer", embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                          window_size=4, in_chans=1, drop_path_rate=0.0),
            decode_head=dict(type="SwinUnetDecoder", in_channels=[24, 48, 96, 192], num_classes=3,
                             loss_decode=[dict(type="CrossEntropyLoss", loss_weight=0.4),
                                          dict(type="SwinUnetDiceLoss", loss_weight=0.6)]),
        ),
        train_dataloader=dict(batch_size=2, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dataset),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3)),
        randomness=dict(seed=0),
    ))
    return _short(cfg)


def _short(cfg: Config) -> Config:
    """ITERS training iterations, a log line each, one checkpoint at the end, no validation or test."""
    for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
        cfg[key] = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=ITERS)
    cfg.param_scheduler = []
    cfg.default_hooks = dict(logger=dict(type="LoggerHook", interval=1),
                             checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=ITERS))
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    cfg.log_level = "WARNING"
    return cfg


def _params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _rank_gap(values: torch.Tensor) -> float:
    """The largest difference between this rank's ``values`` and the other ranks'."""
    gathered = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, values)
    return max((other - values).abs().max().item() for other in gathered)


def _first_bn(model: torch.nn.Module) -> dict | None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return dict(name=name, type=type(module).__name__, mean=module.running_mean.tolist())
    return None


def train_family(name: str, cfg: Config, root: Path) -> dict:
    """Train ``cfg`` for ITERS steps on this rank; what it saw, for rank 0's report."""
    runner = build_runner(cfg, work_dir=str(root / f"work_{name}"), launcher="pytorch")
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    before = _params(model)
    runner.train()
    after = _params(model)
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    return dict(losses=[float(v) for v in losses], wrapper=type(runner.model).__name__, bn=_first_bn(model),
                gap_before=_rank_gap(before), gap_after=_rank_gap(after), moved=(after - before).abs().max().item())


def main(out_dir: str) -> None:
    root = Path(out_dir)
    dist.init_process_group(backend="gloo")  # torchrun's env://; build_runner then reuses the group
    if dist.get_rank() == 0:
        make_data(root)
    dist.barrier()
    builders = dict(upernet=upernet_config, rpn=rpn_config, swin_unet=swin_unet_config)
    report = {}
    for name, build in builders.items():
        seen = train_family(name, build(root), root)
        ranks = [None, None]
        dist.all_gather_object(ranks, seen)
        report[name] = ranks
    if dist.get_rank() == 0:
        (root / "report.json").write_text(json.dumps(report))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
