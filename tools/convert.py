"""Convert a Swin checkpoint (official, timm, mmseg/mmpretrain or densekit layout) to densekit.

    python tools/convert.py swin_tiny_patch4_window7_224.pth swin_t.pth --model swin_t --verify
    python tools/convert.py upernet_swin_t.pth swin_t_w12.safetensors --model swin_t --window-size 12

``--verify`` runs timm's Swin on the source weights and densekit on the written file with the same
random input and fails (exit 1) if any stage differs by more than 1e-4. When ``--window-size`` or
``--in-chans`` change the model, timm is built with the new window / channels and given densekit's
resized bias tables / adapted patch kernel, so the check covers everything else.
"""
from __future__ import annotations

import argparse
import sys

from densekit.convert import BIAS_RESIZE, CheckpointError, convert_file
from densekit.convert.verify import VerifyUnsupported, verify_conversion

TOLERANCE = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="source checkpoint: .pth/.pt/.bin/.ckpt/.safetensors, any supported layout")
    parser.add_argument("dst", help="densekit checkpoint to write (.safetensors or an mmengine-style .pth)")
    parser.add_argument("--model", required=True, help="densekit backbone, e.g. swin_t, swin_b")
    parser.add_argument("--window-size", type=int, help="window of the new model (bias tables are resized)")
    parser.add_argument("--in-chans", type=int, help="input channels of the new model (patch kernel adapted)")
    parser.add_argument("--bias-resize", choices=BIAS_RESIZE, default="bicubic", help="bias-table interpolation")
    parser.add_argument("--verify", action="store_true", help=f"compare with timm's Swin (tolerance {TOLERANCE:g})")
    return parser.parse_args(argv)


def verify(args: argparse.Namespace) -> int:
    try:
        diffs = verify_conversion(args.src, args.dst, args.model, args.window_size, args.in_chans)
    except VerifyUnsupported as error:
        print(f"verify skipped: {error}")
        return 0
    for stage, diff in enumerate(diffs):
        print(f"stage {stage}: max |densekit - timm| = {diff:.3e}")
    worst = max(diffs)
    passed = worst <= TOLERANCE
    print(f"verify {'OK' if passed else 'FAILED'}: max abs diff {worst:.3e} (tolerance {TOLERANCE:g})")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = convert_file(args.src, args.dst, args.model, args.window_size, args.in_chans, args.bias_resize)
    except (FileNotFoundError, CheckpointError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.dst}")
    return verify(args) if args.verify else 0


if __name__ == "__main__":
    sys.exit(main())
