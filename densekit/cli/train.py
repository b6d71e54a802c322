"""Train a model from a config with mmengine's Runner.

CONFIG is a config file or the name of a config densekit ships (``upernet_swin_t_demo``, from any directory).

Examples:
    densekit train upernet_swin_t_demo --work-dir work_dirs/demo   # a shipped config, by name
    python tools/train.py configs/upernet_swin_t_ade.py
    python tools/train.py configs/upernet_swin_t_demo.py --work-dir work_dirs/demo --cfg-options train_cfg.max_iters=100
    python tools/train.py configs/upernet_swin_t_ade.py --resume          # continue from the latest checkpoint
    python tools/train.py configs/upernet_swin_t_demo.py --deterministic  # bit-for-bit repeatable runs
    tools/dist_train.sh configs/upernet_swin_t_ade.py 8                   # torchrun, --launcher pytorch
"""
from __future__ import annotations

import argparse
import time

from mmengine.config import DictAction
from mmengine.dist import is_main_process

from densekit.cli.common import add_launcher_arguments, add_unsafe_load_argument, run_tool
from densekit.engine.config import load_config
from densekit.engine.data_check import check_datasets
from densekit.engine.run_summary import train_summary
from densekit.engine.runner import train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="densekit train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file or shipped config name, e.g. configs/upernet_swin_t_ade.py or "
                        "upernet_swin_t_ade")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms and seeding (randomness.deterministic=True)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper, GPU)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    add_unsafe_load_argument(parser)
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_datasets(cfg, ("train_dataloader", "val_dataloader"))  # fail before building the model
    start = time.perf_counter()
    runner = train(cfg, work_dir=args.work_dir, resume=args.resume, amp=args.amp, launcher=args.launcher,
                   unsafe_load=args.unsafe_load, deterministic=args.deterministic)
    if is_main_process():
        print(train_summary(runner, time.perf_counter() - start))


if __name__ == "__main__":
    run_tool(main)
