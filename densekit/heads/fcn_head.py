"""FCN head (Long et al. 2015), mmsegmentation 1.x ``FCNHead``: UPerNet's auxiliary head on stage 3.

Submodule names follow mmseg (``convs.{i}``, ``conv_cat``, ``conv_seg``), so its checkpoints load by name.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.conv import ConvModule
from ..registry import MODELS


@MODELS.register_module()
class FCNHead(nn.Module):
    """``num_convs`` ConvModules on one backbone level, optionally fused with their input, then a classifier.

    Args:
        in_channels: channels of the level ``features[in_index]``.
        channels: width ``C`` of the convs.
        num_convs: stacked ConvModules; 0 passes the input through (then ``in_channels`` must equal ``channels``).
        kernel_size: side of every conv.
        concat_input: concatenate the input with the conv output and fuse by one more ConvModule (``conv_cat``).
        num_classes: classes ``K``.
        dropout_ratio: ``nn.Dropout2d`` rate before the classifier; 0 = none.
        norm: ``'BN'``, ``'SyncBN'`` or None.
        in_index: which backbone level to read (2 = stride 16, UPerNet's auxiliary input).
        align_corners: kept for mmseg's config vocabulary; the head itself never resizes.
        dilation: dilation of the ``convs`` (padding keeps the size).

    Shapes:
        ``features[in_index]``: ``(B, in_channels, H, W)`` -> logits ``(B, K, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        num_convs: int = 1,
        kernel_size: int = 3,
        concat_input: bool = False,
        num_classes: int = 150,
        dropout_ratio: float = 0.1,
        norm: str | None = "BN",
        in_index: int = 2,
        align_corners: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if num_convs < 0 or dilation < 1:
            raise ValueError(f"need num_convs >= 0 and dilation >= 1, got {num_convs} and {dilation}")
        if num_convs == 0 and in_channels != channels:
            raise ValueError(f"num_convs=0 passes the input through, so in_channels ({in_channels}) "
                             f"must equal channels ({channels})")
        self.in_channels = in_channels
        self.channels = channels
        self.in_index = in_index
        self.num_classes = num_classes
        self.concat_input = concat_input
        self.align_corners = align_corners

        padding = (kernel_size // 2) * dilation
        widths = ([in_channels] + [channels] * (num_convs - 1))[:num_convs]
        convs = [ConvModule(c, channels, kernel_size, padding=padding, dilation=dilation, norm=norm) for c in widths]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, padding=kernel_size // 2,
                                   norm=norm) if concat_input else None
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg's init_cfg for conv_seg
        nn.init.zeros_(self.conv_seg.bias)

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features[in_index]`` ``(B, in_channels, H, W)`` -> ``(B, C, H, W)`` before dropout and classifier."""
        x = features[self.in_index]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FCNHead reads level in_index={self.in_index}: expected (B, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        feats = self.convs(x)
        if self.conv_cat is not None:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the resolution of ``features[in_index]``."""
        feats = self.forward_features(features)
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)
