"""Backbones behind one contract (``base.Backbone``): densekit's own Swin and any timm model."""
from __future__ import annotations

import difflib

from torch import nn

from ..registry import get_backbone_builder, list_backbones
from . import swin, swin_v2, twins, vit  # noqa: F401  (register swin_t/s/b/l, swinv2_t/s/b/l, twins_svt_s/b/l, vit_s/b/l)
from .base import Backbone, local_checkpoint
from .swin import SwinTransformer
from .swin_v2 import SwinTransformerV2
from .vit import ViTBackbone, is_timm_vit


def create_backbone(name: str, pretrained: str | None = None, **kwargs) -> nn.Module:
    """Build a backbone by name: densekit's own (``'swin_t'``) or any timm model (``'convnext_tiny'``).

    Args:
        name: a densekit preset (``list_backbones()``), a timm ViT (``ViTBackbone``) or a timm model name with
            ``feature_info``.
        pretrained: a local checkpoint path in any supported layout; never downloaded.
        **kwargs: constructor arguments of ``SwinTransformer``, ``ViTBackbone`` or ``TimmBackbone``.

    Returns:
        A ``Backbone`` whose ``forward`` maps ``(B, C, H, W)`` to NCHW maps with ``out_channels``
        and ``strides``.
    """
    pretrained = local_checkpoint(pretrained, name)  # pretrained=True fails here, naming the file to fetch
    builder = get_backbone_builder(name)
    if builder is not None:
        return builder(pretrained=pretrained, **kwargs)
    if is_timm_vit(name):  # one scale: its blocks' tokens as maps, not timm's feature_info levels
        return ViTBackbone(name, pretrained=pretrained, **kwargs)
    from .timm_backbone import TimmBackbone, is_timm_model

    if is_timm_model(name):
        return TimmBackbone(name, pretrained=pretrained, **kwargs)
    close = difflib.get_close_matches(name, list_backbones(), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(f"unknown backbone {name!r}: not a densekit preset ({', '.join(list_backbones())}) "
                   f"nor a timm model{hint}")


__all__ = ["Backbone", "SwinTransformer", "SwinTransformerV2", "ViTBackbone", "create_backbone"]
