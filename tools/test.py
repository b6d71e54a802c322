"""Evaluate a checkpoint on a config's test set (mIoU etc.), optionally with flip + multi-scale TTA.

Examples:
    python tools/test.py configs/upernet_swin_t_ade.py work_dirs/upernet_swin_t_ade/iter_160000.pth
    python tools/test.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_300.pth --tta --out-dir overlays
"""
from __future__ import annotations

import argparse

from densekit.apis import DictAction, load_config, test
from densekit.cli import check_datasets, run_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir")
    parser.add_argument("--tta", action="store_true", help="flip + scales 0.5..1.75, softmax-averaged")
    parser.add_argument("--out-dir", help="write a colour overlay PNG per test image here")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = load_config(args.config, args.cfg_options)
    check_datasets(cfg, ("test_dataloader",))  # fail before building the model
    if args.out_dir:
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [dict(type="SegOverlayHook", out_dir=args.out_dir)]
    metrics = test(cfg, args.checkpoint, work_dir=args.work_dir, tta=args.tta, launcher=args.launcher)
    print({k: round(float(v), 4) for k, v in metrics.items()})


if __name__ == "__main__":
    run_tool(main)
