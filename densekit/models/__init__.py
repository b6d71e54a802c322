"""Models that configs build (registered in ``MODELS``): the UPerNet segmentor, Swin-Unet and the RPN
detector, with their data preprocessors, losses and detection utilities."""
from __future__ import annotations

from .anchors import AnchorGenerator
from .assigner import MaxIoUAssigner, RandomSampler
from .base_segmentor import BaseSegmentor
from .box_coder import DeltaXYWHBBoxCoder
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
    "RPN", "AnchorGenerator", "BaseSegmentor", "CrossEntropyLoss", "DecodeLoss", "DeltaXYWHBBoxCoder",
    "DetDataPreProcessor", "DiceLoss", "EncoderDecoder", "FocalLoss", "LovaszLoss", "MaxIoUAssigner",
    "RandomSampler", "SegDataPreProcessor", "SwinUnet", "SwinUnetDiceLoss", "build_decode_loss",
]
