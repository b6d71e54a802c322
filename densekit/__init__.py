"""densekit: dense prediction (UPerNet, RPN, Swin-Unet) on hierarchical vision backbones."""
from __future__ import annotations

from .backbones import create_backbone
from .registry import list_backbones

__version__ = "0.1.0"
__all__ = ["create_backbone", "list_backbones", "__version__"]
