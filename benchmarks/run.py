"""Benchmark densekit against peer implementations; optionally record the result in docs/benchmarks.md.

Run from a checkout (the suites compare against HF transformers, timm, torchvision and the official Swin-Unet
loop, which an installed densekit does not need):

    python -m benchmarks --suite swin_t_backbone --size 512 512 --runs 7 --write
    python -m benchmarks --suite upernet_convnext_t --size 512 512 --runs 5 --warmup 1
    python -m benchmarks --suite upernet_swin_t --size 512 512 --mode channels_last
    python -m benchmarks --suite upernet_swin_t --size 512 512 --batch 16 --mode bf16 --device cuda \\
        --runs 10 --warmup 3 --write

To measure one model of your own (a config's), use ``densekit benchmark CONFIG --shape H W`` instead. The suites
are listed in ``SUITES``; the machinery is in ``benchmarks.harness``; this file parses arguments and runs one.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from . import harness as benchmark
from .convnext import convnext_t_backbone
from .harness import BenchConfig, SuiteResult
from .rpn import rpn_r50_fpn
from .swin import swin_t_backbone
from .swin_v2 import swinv2_t_backbone
from .upernet import upernet_convnext_t, upernet_swin_t
from .vit import vit_b_backbone
from .volume import swin_unet_volume

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

SUITES: dict[str, Callable[[BenchConfig], SuiteResult]] = {
    "swin_t_backbone": swin_t_backbone,
    "swinv2_t_backbone": swinv2_t_backbone,
    "convnext_t_backbone": convnext_t_backbone,
    "upernet_swin_t": upernet_swin_t,
    "upernet_convnext_t": upernet_convnext_t,
    "swin_unet_volume": swin_unet_volume,
    "rpn_r50_fpn": rpn_r50_fpn,
    "vit_b_backbone": vit_b_backbone,
}


def list_suites() -> list[str]:
    return sorted(SUITES)


def run_suite(name: str, config: BenchConfig) -> SuiteResult:
    """Run the suite ``name``; raises KeyError naming the known suites."""
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(list_suites())}")
    return SUITES[name](config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="swin_t_backbone", choices=list_suites())
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (median and min are reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--mode", default="fp32", choices=benchmark.MODES,
                        help="bf16 = torch.autocast bfloat16; channels_last = fp32 with models and inputs in "
                             "torch.channels_last; compile = fp32 through torch.compile (eager if it fails), compiled "
                             "before the timed rounds; each mode gets its own docs section")
    parser.add_argument("--device", default="cpu", choices=benchmark.DEVICES)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="CUDA: the card's dense bf16 peak in TFLOPS for model FLOPs utilisation (upernet_* "
                             "suites); default: NVIDIA's datasheet value for known cards (benchmarks.mfu)")
    parser.add_argument("--no-peak-rss", action="store_true",
                        help="skip the CPU peak-memory measurement of training steps (a process per model)")
    parser.add_argument("--write", action="store_true", help=f"update the suite's section of {DOCS.name}")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> SuiteResult:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = BenchConfig(tuple(args.size), args.batch, args.runs, args.warmup, args.mode, args.device,
                         peak_rss=not args.no_peak_rss, peak_tflops=args.peak_tflops)
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    load_before, cpu_before = benchmark.load_average(), benchmark.cpu_snapshot()
    result = run_suite(args.suite, config)
    background = benchmark.background_cpu(cpu_before, benchmark.cpu_snapshot())
    section = benchmark.render_section(result, config, command, load_before, benchmark.load_average(), background)
    print(section)
    if args.write:
        name = benchmark.section_name(args.suite, config)
        benchmark.update_section(args.docs, name, section)
        print(f"updated section {name!r} of {args.docs}")
    return result
