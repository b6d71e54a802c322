"""argparse types the commands share; torch-free, so ``--help`` stays fast."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """Sizes and counts (``--shape``, ``--crop``, ``--batch``): 0 or a negative number is a usage error (exit 2)
    naming the value, raised while parsing, before any model is loaded."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (pixels or a count), got {value}")
    return value
