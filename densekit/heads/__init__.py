"""Heads: map feature lists to logits (DESIGN.md §3), with the RPN head's anchors, box coder and assigner.
Importing registers them in ``MODELS``."""
from __future__ import annotations

from .fcn_head import FCNHead
from .lraspp import LRASPPHead
from .rpn_head import RPNHead
from .swin_unet_decoder import SwinUnetDecoder
from .uper_head import UPerHead

__all__ = ["FCNHead", "LRASPPHead", "RPNHead", "SwinUnetDecoder", "UPerHead"]
