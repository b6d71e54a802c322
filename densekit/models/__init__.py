"""Models that configs build (registered in ``MODELS``): the UPerNet segmentor, Swin-Unet and the RPN
detector, with their data preprocessors, losses and detection utilities."""
from __future__ import annotations

from .anchors import AnchorGenerator
from .assigner import MaxIoUAssigner, RandomSampler
from .box_coder import DeltaXYWHBBoxCoder
from .det_preprocessor import DetDataPreProcessor
from .losses import SegLoss, soft_dice_loss
from .preprocessor import SegDataPreProcessor
from .rpn import RPN
from .segmentor import EncoderDecoder
from .swin_unet import SwinUnet

__all__ = [
    "RPN", "AnchorGenerator", "DeltaXYWHBBoxCoder", "DetDataPreProcessor", "EncoderDecoder", "MaxIoUAssigner",
    "RandomSampler", "SegDataPreProcessor", "SegLoss", "SwinUnet", "soft_dice_loss",
]
