"""Models that configs build: the encoder-decoder segmentor and its data preprocessor."""
from __future__ import annotations

from . import preprocessor, segmentor  # noqa: F401  (registration)
from .losses import SegLoss, soft_dice_loss
from .preprocessor import SegDataPreProcessor
from .segmentor import EncoderDecoder

__all__ = ["EncoderDecoder", "SegDataPreProcessor", "SegLoss", "soft_dice_loss"]
