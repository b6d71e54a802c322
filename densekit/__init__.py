"""densekit: dense prediction (UPerNet, RPN, Swin-Unet) on hierarchical vision backbones."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["create_backbone", "list_backbones", "__version__"]


def __getattr__(name: str):
    """``densekit.create_backbone`` / ``densekit.list_backbones``, imported on first use: ``import densekit`` (and
    so ``densekit --help``) stays free of torch, which takes seconds to import."""
    if name == "create_backbone":
        from .backbones import create_backbone

        return create_backbone
    if name == "list_backbones":
        from .backbones import create_backbone  # noqa: F401  (registers the backbones it lists)
        from .registry import list_backbones

        return list_backbones
    raise AttributeError(f"module 'densekit' has no attribute {name!r}")
