"""Models that configs build (registered in ``MODELS``): the UPerNet segmentor, Swin-Unet and the RPN
detector, with their data preprocessors and losses."""
from __future__ import annotations

from .det_preprocessor import DetDataPreProcessor
from .losses import SegLoss, soft_dice_loss
from .preprocessor import SegDataPreProcessor
from .rpn import RPN
from .segmentor import EncoderDecoder
from .swin_unet import SwinUnet

__all__ = [
    "RPN", "DetDataPreProcessor", "EncoderDecoder", "SegDataPreProcessor", "SegLoss", "SwinUnet", "soft_dice_loss",
]
