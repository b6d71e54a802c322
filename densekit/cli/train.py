"""Train a model from a config with mmengine's Runner.

CONFIG is a config file or the name of a config densekit ships (``upernet_swin_t_demo``, from any directory).
``--data DIR`` trains it on a folder of your own: ``images/{train,val}/*`` + ``masks/{train,val}/*.png`` +
``classes.txt`` (or ``--classes a,b,c``), or NIfTI volumes in ``imagesTr/`` + ``labelsTr/``; every head's
``num_classes`` follows the classes. The data, the class counts and (up to 1000 per set) the samples are
checked before a work dir is made. mmengine's preamble (environment, config) goes to the log file only, unless
``--verbose``.

Examples:
    densekit train upernet_swin_t_demo --work-dir work_dirs/demo   # a shipped config, by name
    densekit train upernet_swin_t_custom --data my_data --work-dir work_dirs/mine   # your own folder
    python tools/train.py configs/upernet_swin_t_ade.py
    python tools/train.py configs/upernet_swin_t_demo.py --work-dir work_dirs/demo --cfg-options train_cfg.max_iters=100
    python tools/train.py configs/upernet_swin_t_ade.py --resume          # continue from the latest checkpoint
    python tools/train.py configs/upernet_swin_t_demo.py --deterministic  # bit-for-bit repeatable runs
    tools/dist_train.sh configs/upernet_swin_t_ade.py 8                   # torchrun, --launcher pytorch
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from mmengine.config import DictAction
from mmengine.dist import is_main_process

from densekit.cli.common import add_launcher_arguments, add_unsafe_load_argument, run_tool
from densekit.datasets.bad_samples import SKIP_HINT, BadSampleError
from densekit.engine.config import load_config
from densekit.engine.console import log_to_file
from densekit.engine.data_check import check_datasets, check_samples
from densekit.engine.own_data import demo_data_folder, use_data_folder
from densekit.engine.run_summary import train_summary
from densekit.engine.runner import build_train_runner, run_train


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densekit train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file or shipped config name, e.g. configs/upernet_swin_t_ade.py or "
                        "upernet_swin_t_ade")
    parser.add_argument("--data", metavar="DIR", help="train on this folder: images/{train,val} + masks/{train,val} "
                        "+ classes.txt (SegDataset), or imagesTr + labelsTr (NIfTI)")
    parser.add_argument("--classes", metavar="A,B,C", help="class names, comma-separated (default DIR/classes.txt)")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="resume from the latest checkpoint in the work dir")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic algorithms and seeding (randomness.deterministic=True)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper, GPU)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print mmengine's environment, config and hook dump on the terminal")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    add_unsafe_load_argument(parser)
    add_launcher_arguments(parser)
    return parser


def prepare(args: argparse.Namespace):
    """The config with ``--cfg-options`` and ``--data`` applied and checked (data layout, class counts,
    samples), before anything is written; prints what was changed."""
    notes: list[str] = []
    cfg = load_config(args.config, args.cfg_options, notes)
    data = args.data or demo_data_folder(cfg)
    if data:
        notes += use_data_folder(cfg, data, args.classes, keep=args.cfg_options or ())
    elif args.classes:
        raise FileNotFoundError("--classes names the classes of a --data folder; give --data DIR too")
    check_datasets(cfg, ("train_dataloader", "val_dataloader"))  # fail before building the model
    check_samples(cfg, ("train_dataloader", "val_dataloader"))
    if is_main_process():
        for note in notes:
            print(note, flush=True)
    return cfg


def _resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--resume"]
    return "densekit train " + " ".join(shlex.quote(a) for a in args) + " --resume"


def _interrupted(runner, argv: list[str]) -> str:
    """One line: where the run stopped, its last checkpoint and how to resume."""
    pointer = os.path.join(runner.work_dir, "last_checkpoint")
    last = open(pointer, encoding="utf-8").read().strip() if os.path.isfile(pointer) else None
    if last is None:
        return f"interrupted at iteration {runner.iter}; no checkpoint was written yet, so there is nothing to resume"
    if "--work-dir" not in argv:
        argv = [*argv, "--work-dir", str(runner.work_dir)]
    return f"interrupted at iteration {runner.iter}; last checkpoint {last}; continue with: {_resume_command(argv)}"


def _bad_sample_message(error: BaseException) -> str:
    """The dataset's own message of a bad-sample error, without the DataLoader worker's traceback that torch
    puts in front of it when a worker raised it."""
    text = str(error).strip()
    return text.splitlines()[-1].split(": ", 1)[-1] if "Traceback" in text else text


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        cfg = prepare(args)
    except BadSampleError as error:  # found by the up-front check: nothing was written
        raise SystemExit(f"error: {error}; {SKIP_HINT}") from None
    start = time.perf_counter()
    runner = build_train_runner(cfg, work_dir=args.work_dir, resume=args.resume, amp=args.amp,
                                launcher=args.launcher, deterministic=args.deterministic, quiet=not args.verbose)
    try:
        run_train(runner, cfg, unsafe_load=args.unsafe_load)
    except KeyboardInterrupt as error:
        log_to_file(runner, "interrupted (Ctrl-C)", error)
        print(f"\n{_interrupted(runner, argv)}", file=sys.stderr)
        raise SystemExit(130) from None
    except (BadSampleError, OSError) as error:
        if not isinstance(error, BadSampleError) and "BadSampleError" not in str(error):
            raise
        log = log_to_file(runner, "stopped by a bad sample", error)
        raise SystemExit(f"error: {_bad_sample_message(error)}; {SKIP_HINT} (traceback in {log})") from None
    except Exception as error:
        log_to_file(runner, "training stopped by an error", error)  # the terminal gets run_tool's one line
        raise
    if is_main_process():
        print(train_summary(runner, time.perf_counter() - start))


if __name__ == "__main__":
    run_tool(main)
