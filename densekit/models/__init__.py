"""Models that configs build (registered in ``MODELS``): the UPerNet segmentor, Swin-Unet and the RPN
detector, with their data preprocessors and losses."""
from __future__ import annotations

from .base_segmentor import BaseSegmentor
from .det_preprocessor import DetDataPreProcessor
from .losses import (
    CrossEntropyLoss,
    DecodeLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    SwinUnetDiceLoss,
    build_decode_loss,
)
from .preprocessor import SegDataPreProcessor
from .rpn import RPN
from .segmentor import EncoderDecoder
from .swin_unet import SwinUnet

__all__ = [
    "RPN", "BaseSegmentor", "CrossEntropyLoss", "DecodeLoss", "DetDataPreProcessor", "DiceLoss", "EncoderDecoder",
    "FocalLoss", "LovaszLoss", "SegDataPreProcessor", "SwinUnet", "SwinUnetDiceLoss", "build_decode_loss",
]
