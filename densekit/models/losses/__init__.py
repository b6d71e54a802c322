"""Segmentation losses: mmsegmentation 1.x's loss types under their names (registered in ``MODELS``, so config checks
know their arguments), one file per family, and the head's loss stack that ``loss_decode`` builds.

- ``cross_entropy.py``: ``CrossEntropyLoss`` (softmax, or sigmoid for one-class heads; ``avg_non_ignore``)
- ``dice.py``: ``DiceLoss`` (mmseg's) and ``SwinUnetDiceLoss`` (the official Swin-Unet trainer's)
- ``focal.py``: ``FocalLoss``;  ``lovasz.py``: ``LovaszLoss``
- ``decode_loss.py``: ``build_decode_loss`` (``loss_decode`` -> ``DecodeLoss``), ``pixel_accuracy``
"""
from __future__ import annotations

from .cross_entropy import CrossEntropyLoss, ce_avg_factor
from .decode_loss import (
    LOSS_TYPES,
    DecodeLoss,
    build_decode_loss,
    check_loss_decode,
    pixel_accuracy,
    pop_loss_keys,
    predict_labels,
)
from .dice import DiceLoss, SwinUnetDiceLoss
from .focal import FocalLoss
from .lovasz import LovaszLoss

__all__ = [
    "LOSS_TYPES", "CrossEntropyLoss", "DecodeLoss", "DiceLoss", "FocalLoss", "LovaszLoss", "SwinUnetDiceLoss",
    "build_decode_loss", "ce_avg_factor", "check_loss_decode", "pixel_accuracy", "pop_loss_keys", "predict_labels",
]
