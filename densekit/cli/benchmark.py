"""Measure a config's model: latency (median and min), throughput (images/s) and peak memory of inference
(``model.predict``) on a random batch of the given shape, in fp32, bf16, channels_last or compile mode, as
mmsegmentation's tools/analysis_tools/benchmark.py does for its configs. CONFIG is a config file or the name of a
config densekit ships. Random weights unless --checkpoint is given; image reading and normalisation are not timed.
On the CPU the fast paths of densekit.accel are installed, as init_model does; --no-accel measures without them.
Peak memory: the peak during the warm-up and timed calls above what was resident before them (model and batch):
the CUDA allocator's on a GPU, this process's resident set on the CPU (the table says how it was measured).

Examples:
    densekit benchmark upernet_swin_t_ade --shape 512 512
    densekit benchmark upernet_swin_t_ade --shape 512 512 --mode bf16 --batch 4
    densekit benchmark upernet_swin_t_ade --shape 512 512 --no-accel   # without the CPU fast paths
    densekit benchmark configs/upernet_swin_t_demo.py --checkpoint work_dirs/demo/iter_200.pth --shape 256 256
    densekit benchmark upernet_swin_t_ade --shape 512 512 --batch 16 --mode compile --device cuda

The peer comparisons (densekit against timm, HF transformers, torchvision and the official Swin-Unet loop) are
development tooling in a checkout: python -m benchmarks --suite swin_t_backbone --size 512 512.
"""
from __future__ import annotations

import argparse

import torch
from mmengine.config import DictAction

from densekit.cli.arguments import positive_int
from densekit.cli.common import add_unsafe_load_argument, run_tool
from densekit.inference.benchmark import DEVICES, MODES, BenchmarkResult, BenchmarkSettings, benchmark_config


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and the default of every argument that has one in its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densekit benchmark", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("config", help="config file or shipped config name, e.g. upernet_swin_t_ade")
    parser.add_argument("--shape", type=positive_int, nargs=2, default=(512, 512), metavar=("H", "W"),
                        help="input height and width (default: 512 512)")
    parser.add_argument("--batch", type=positive_int, default=1, help="images per call")
    parser.add_argument("--runs", type=positive_int, default=10, help="timed calls (median and min are reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--mode", default="fp32", choices=MODES,
                        help="bf16 = torch.autocast bfloat16; channels_last = fp32, model and input in "
                             "torch.channels_last; compile = fp32, the inference path through torch.compile (eager "
                             "with a warning where that fails), compiled before the timed calls")
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="where the model runs")
    parser.add_argument("--checkpoint", help="weights to load (any layout init_model reads); random weights without it")
    parser.add_argument("--no-accel", action="store_true", help="CPU: measure without densekit.accel's fast paths")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (CPU)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    add_unsafe_load_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> BenchmarkResult:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = BenchmarkSettings(tuple(args.shape), args.batch, args.runs, args.warmup, args.mode, args.device,
                                 accel=not args.no_accel)
    result = benchmark_config(args.config, settings, args.checkpoint, args.cfg_options, args.unsafe_load)
    print(result.table())
    return result


if __name__ == "__main__":
    run_tool(main)
