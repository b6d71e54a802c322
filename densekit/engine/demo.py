"""The quickstart jobs behind ``make demo`` / ``densekit demo`` / ``tools/demo.py``.

``run_segmentation_demo`` (the default): train UPerNet + Swin-T from scratch on the generated demo dataset
(the shipped config ``upernet_swin_t_demo``) on the CPU with mmengine's Runner, validate it along the way, then
write comparison panels of validation predictions and a PNG of the loss and mIoU curves, and print a
summary. It writes under the current directory (the config's ``data/densekit_demo`` and the work dir,
``work_dirs/demo`` by default), so it runs the same from a checkout or an installed package.
``run_backbone_demo`` (``tools/demo.py --backbones-only``): build backbones, run them on a generated image,
print feature shapes and timings. Both run offline (random init, generated data).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config

from ..accel import optimize
from ..backbones import create_backbone
from ..visualization import comparison_panel, default_palette, plot_training_curves, read_scalars, write_image
from .config import CONFIG_DIR, find_config
from .data_check import check_datasets
from .runner import train
from .schedule import rescale_schedulers

DEFAULT_BACKBONES = ("swin_t", "convnext_tiny", "resnet50")
DEMO_NAME = "upernet_swin_t_demo"
DEMO_CONFIG = CONFIG_DIR / f"{DEMO_NAME}.py"  # package data
DEFAULT_WORK_DIR = "work_dirs/demo"
TARGET_MIOU = 0.60  # what the demo reaches with margin on a 2-core CPU; below it something is broken


# ------------------------------------------------------------------------------------ backbone demo
def demo_image(height: int = 512, width: int = 512, seed: int = 0) -> torch.Tensor:
    """A deterministic, normalised ``(1, 3, H, W)`` test picture: smooth gradients plus a few discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width, yy / height, 0.5 * (xx + yy) / (width + height)])
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 80)
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, size=(3, 1))
    return torch.from_numpy((image - 0.45) / 0.25).unsqueeze(0)


def run_backbone_demo(names: tuple[str, ...] = DEFAULT_BACKBONES, size: tuple[int, int] = (512, 512),
                      runs: int = 3) -> list[dict]:
    """Forward each backbone on the demo image; print and return shapes and median latency (ms)."""
    image = demo_image(*size)
    print(f"densekit backbone demo: input {tuple(image.shape)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = []
    for name in names:
        model = optimize(create_backbone(name).eval())  # CPU inference: densekit's fast paths, as init_model
        times = []
        with torch.inference_mode():
            feats = model(image)  # warm-up
            for _ in range(runs):
                start = time.perf_counter()
                feats = model(image)
                times.append(1000 * (time.perf_counter() - start))
        shapes = [tuple(f.shape) for f in feats]
        row = {"name": name, "shapes": shapes, "strides": model.strides, "ms": statistics.median(times)}
        print(f"  {name:<14} {row['ms']:8.1f} ms  strides {model.strides}  " + "  ".join(map(str, shapes)))
        results.append(row)
    return results


# ---------------------------------------------------------------------------------- segmentation demo
def load_demo_config(config: str | Path = DEMO_CONFIG, *, work_dir: str | None = None, data_root: str | None = None,
                     max_iters: int | None = None, val_interval: int | None = None,
                     crop_size: int | None = None, batch_size: int | None = None,
                     dataset: dict | None = None) -> Config:
    """The demo config with its knobs changed consistently (what ``--cfg-options`` cannot do for values the
    file derives from one variable).

    Args:
        config: the demo config: a file, or the name of a shipped config (``densekit.engine.config.find_config``).
        work_dir: where logs, checkpoints and pictures go.
        data_root: the generated dataset's folder (train and val).
        max_iters: training length; the lr schedule and the checkpoint interval follow.
        val_interval: iterations between validations (the mIoU curve's points); ``max_iters`` stays a multiple
            of it, so the last iteration is validated.
        crop_size: square training crop side; the preprocessor's pad size follows.
        batch_size: training images per iteration.
        dataset: ``DemoDataset`` generation arguments (``num_train``, ``num_val``, ``size``, ``seed``) for both
            splits; ``size`` also becomes the training resize scale.
    """
    cfg = Config.fromfile(str(find_config(config)))
    if work_dir is not None:
        cfg.work_dir = work_dir
    train_ds = cfg.train_dataloader.dataset
    # test_dataloader is a copy of val_dataloader once loaded: both must follow, or tools/test.py would
    # regenerate the default dataset over this one.
    for ds in (train_ds, cfg.val_dataloader.dataset, cfg.test_dataloader.dataset):
        if data_root is not None:
            ds.data_root = data_root
        ds.update(dataset or {})
    if dataset and "size" in dataset:
        for step in train_ds.pipeline:
            if step["type"] == "RandomResize":
                step["scale"] = tuple(dataset["size"])
    if crop_size is not None:
        cfg.model.data_preprocessor.size = (crop_size, crop_size)
        for step in train_ds.pipeline:
            if "crop_size" in step:
                step["crop_size"] = (crop_size, crop_size)
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    old_max = cfg.train_cfg.max_iters
    new_max = max_iters or old_max
    interval = min(val_interval or cfg.train_cfg.val_interval, new_max)
    new_max = -(-new_max // interval) * interval  # the last iteration is a validation point
    if new_max != old_max:
        rescale_schedulers(cfg.param_scheduler, old_max, new_max)
    cfg.train_cfg.max_iters = new_max
    cfg.train_cfg.val_interval = interval
    cfg.default_hooks.checkpoint.interval = new_max
    return cfg


def _scalars_file(log_dir: Path) -> Path:
    return log_dir / "vis_data" / "scalars.json"


def write_val_panels(model: torch.nn.Module, dataloader, out_dir: Path, num: int = 8) -> list[Path]:
    """Predict the first ``num`` validation images; write ``out_dir/<stem>.png`` = image | ground truth |
    prediction with the dataset's class colours and a legend. Returns the paths written."""
    meta = dataloader.dataset.metainfo
    classes = list(meta.get("classes", []))
    palette = meta.get("palette") or default_palette(len(classes))
    written: list[Path] = []
    model.eval()
    with torch.no_grad():
        for batch in dataloader:
            for sample in model.test_step(batch):
                image = _read_bgr(sample.img_path)
                pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                gt = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.uint8) if "gt_sem_seg" in sample else None
                path = out_dir / f"{Path(sample.img_path).stem}.png"
                write_image(path, comparison_panel(image, gt, pred, palette, classes))
                written.append(path)
                if len(written) >= num:
                    return written
    return written


def _read_bgr(path: str) -> np.ndarray:
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(f"could not read image {path}")
    return image


def run_segmentation_demo(config: str | Path | Config = DEMO_CONFIG, work_dir: str | Path = DEFAULT_WORK_DIR,
                          num_panels: int = 8, target: float | None = TARGET_MIOU) -> dict:
    """Train the demo config, then write ``<work_dir>/curves.png`` and ``<work_dir>/overlays/*.png`` and
    print a summary.

    Args:
        config: a config file or a ``Config`` (e.g. from ``load_demo_config``).
        work_dir: logs, checkpoint and pictures.
        num_panels: validation images drawn.
        target: the mIoU the summary compares with; None for a shortened schedule, which it is not calibrated for.

    Returns:
        ``dict(miou, reached, seconds, iters, curves, panels, checkpoint, work_dir)``; ``reached`` is None without
        a target.
    """
    start = time.perf_counter()
    cfg = config if isinstance(config, Config) else load_demo_config(config)
    work_dir = Path(work_dir)
    cfg.work_dir = str(work_dir)
    print(f"densekit demo: UPerNet + Swin-T from scratch on the generated demo dataset, "
          f"{cfg.train_cfg.max_iters} iterations on the CPU ({torch.get_num_threads()} threads); "
          f"work dir {work_dir}", flush=True)
    check_datasets(cfg)  # generates the dataset (with a progress bar) before the model is built
    runner = train(cfg, work_dir=str(work_dir))
    log_dir = Path(runner.log_dir)
    scalars = _scalars_file(log_dir)
    curves = plot_training_curves(scalars, work_dir / "curves.png", metric="mIoU", target=target,
                                  title="densekit demo: UPerNet + Swin-T (random init) on DemoDataset")
    panels = write_val_panels(runner.model, runner.val_dataloader, work_dir / "overlays", num_panels)
    _, val_rows = read_scalars(scalars)
    miou = float(val_rows[-1]["mIoU"]) if val_rows else float("nan")
    checkpoint = work_dir / f"iter_{runner.iter}.pth"
    reached = None if target is None else bool(miou >= target)
    result = dict(miou=miou, reached=reached, seconds=time.perf_counter() - start, iters=runner.iter,
                  curves=curves, panels=panels, checkpoint=checkpoint if checkpoint.is_file() else None,
                  work_dir=work_dir, log_dir=work_dir / log_dir.name)
    print_summary(result, target, cfg)
    return result


def config_argument(cfg: Config) -> str:
    """How a command names ``cfg``'s file: a shipped config by its name, any other by its path."""
    path = Path(cfg.filename)
    return path.stem if path.parent == CONFIG_DIR else str(path)


def print_summary(result: dict, target: float | None, cfg: Config) -> None:
    """The demo's last lines: the result, where the pictures are, what to run next."""
    minutes, seconds = divmod(round(result["seconds"]), 60)
    if target is None:
        verdict = f"target >= {TARGET_MIOU:.2f} is for the config's full schedule, not judged on a shortened run"
    else:
        verdict = f"target >= {target:.2f}: " + (
            "reached" if result["reached"] else "NOT reached: something is off, please report it")
    val_root = Path(cfg.val_dataloader.dataset.data_root) / cfg.val_dataloader.dataset.img_dir
    lines = [
        "",
        f"densekit demo finished in {minutes}m{seconds:02d}s ({result['iters']} iterations)",
        f"  validation mIoU {result['miou']:.3f}   ({verdict})",
        f"  curves       {result['curves']}   (training loss and validation mIoU)",
        f"  overlays     {result['work_dir'] / 'overlays'}/   ({len(result['panels'])} PNGs: image | ground "
        "truth | prediction)",
        f"  logs         {result['log_dir']}",
    ]
    if result["checkpoint"] is not None:
        lines += [
            f"  checkpoint   {result['checkpoint']}",
            f"  next:  densekit infer {config_argument(cfg)} {result['checkpoint']} {val_root} "
            f"--out-dir {result['work_dir'] / 'infer'}",
        ]
    print("\n".join(lines), flush=True)
