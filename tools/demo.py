"""Quickstart demo: ``python tools/demo.py [--size H W] [--backbones NAME ...]``."""
from __future__ import annotations

import argparse

from densekit.demo import DEFAULT_BACKBONES, run_backbone_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    run_backbone_demo(tuple(args.backbones), tuple(args.size), args.runs)


if __name__ == "__main__":
    main()
