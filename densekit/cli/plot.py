"""Draw a training run's loss and metric curves, and its per-class IoU, from the work dir mmengine logged to.

mmengine writes ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (one JSON object per line); the newest run that
has one is drawn, or the one named by ``--run``. Writes:

    WORK_DIR/curves.png          one subplot per loss term and per validation metric, x = iteration
    WORK_DIR/per_class_iou.png   horizontal bars of the last validation's per-class IoU, in class colours
                                 (when per-class IoU was logged: ``IoUMetric(per_class=True)``)

Examples:
    densekit plot work_dirs/demo
    densekit plot work_dirs/upernet_swin_t_ade --out pics/ade_curves.png --title "UPerNet Swin-T ADE20K"
    densekit plot work_dirs/demo --run 20261121_140501
    python tools/plot.py work_dirs/demo
"""
from __future__ import annotations

import argparse
from pathlib import Path


def find_scalars(work_dir: str | Path, run: str | None = None) -> Path:
    """``scalars.json`` of the newest (or the named) run under ``work_dir``; ``work_dir`` may also be a run folder
    or the file itself. Raises ``FileNotFoundError`` naming what was looked for."""
    work_dir = Path(work_dir)
    if work_dir.is_file():
        return work_dir
    if not work_dir.is_dir():
        raise FileNotFoundError(f"work dir {work_dir} does not exist")
    if run is not None:
        path = work_dir / run / "vis_data" / "scalars.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: is {run!r} a run folder of {work_dir}?")
        return path
    candidates = sorted(work_dir.glob("*/vis_data/scalars.json")) or sorted(work_dir.glob("vis_data/scalars.json"))
    if not candidates:
        raise FileNotFoundError(f"{work_dir} holds no <timestamp>/vis_data/scalars.json: point at the work dir of a "
                                "run trained with tools/train.py (mmengine's LocalVisBackend writes it)")
    return candidates[-1]  # timestamps (YYYYMMDD_HHMMSS) sort in time order


def palette_from_work_dir(work_dir: Path) -> list | None:
    """The class palette of the config mmengine dumped into ``work_dir`` (``<config>.py``), when there is one."""
    configs = sorted(work_dir.glob("*.py")) if work_dir.is_dir() else []
    if len(configs) != 1:
        return None
    from ..engine.config import load_config
    from ..inference.api import _dataset_meta

    return _dataset_meta(load_config(str(configs[0]))).get("palette")


def plot_work_dir(work_dir: str | Path, out: str | Path | None = None, run: str | None = None,
                  title: str = "") -> dict[str, Path]:
    """Write the curves (and the per-class IoU chart when logged) of a work dir; returns ``{name: path}``."""
    from ..visualization import per_class_iou, plot_curves, plot_per_class_iou, read_scalars

    scalars = find_scalars(work_dir, run)
    folder = Path(work_dir) if Path(work_dir).is_dir() else scalars.parent
    out = Path(out) if out else folder / "curves.png"
    written = {"curves": plot_curves(scalars, out, title=title or str(folder))}
    _, val = read_scalars(scalars)
    last_with_classes = [row for row in val if any(k.startswith("IoU.") for k in row)]
    if last_with_classes:
        names, ious = per_class_iou(last_with_classes[-1])
        step = last_with_classes[-1].get("step")
        written["per_class_iou"] = plot_per_class_iou(
            names, ious, out.with_name("per_class_iou.png"), palette_from_work_dir(folder),
            title=f"per-class IoU at iteration {step}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="densekit plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", help="the run's work dir (or a <timestamp> folder, or a scalars.json)")
    parser.add_argument("--out", help="curves PNG (default WORK_DIR/curves.png); the per-class chart goes beside it")
    parser.add_argument("--run", help="the <timestamp> folder to draw (default: the newest)")
    parser.add_argument("--title", default="", help="figure title (default: the work dir)")
    args = parser.parse_args(argv)
    for name, path in plot_work_dir(args.work_dir, args.out, args.run, args.title).items():
        print(f"{name:14s} {path}")
    return 0
