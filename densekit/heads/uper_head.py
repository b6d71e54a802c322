"""UPerNet decode head (Xiao et al. 2018), mmsegmentation 1.x ``UPerHead`` to the last weight.

A pyramid pooling module (PSPNet) on the coarsest level feeds an FPN over all levels; every
level is resized to the finest and fused by a 3x3 conv, then classified. Submodule names follow
mmseg (``psp_modules.{i}.1``, ``bottleneck``, ``lateral_convs.{i}``, ``fpn_convs.{i}``,
``fpn_bottleneck``, ``conv_seg``), so its checkpoints load by name.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvModule, check_channels
from ..layers.tracing import is_tracing
from ..registry import MODELS


def _resize(x: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def _pool_matrix(size: torch.Tensor, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, size)`` averaging weights of adaptive average pooling along one axis: bin ``i`` covers
    ``[floor(i * size / bins), ceil((i + 1) * size / bins))``, as ``F.adaptive_avg_pool2d`` does."""
    index = torch.arange(bins, device=like.device)
    start = (index * size) // bins
    end = ((index + 1) * size + bins - 1) // bins
    positions = torch.arange(size, device=like.device)  # type: ignore[arg-type]
    inside = ((positions[None] >= start[:, None]) & (positions[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that, while a graph is recorded (ONNX export), pools with two averaging
    matrices built from the input size: ONNX has no adaptive pooling for a size unknown at export time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing():
            return super().forward(x)
        bins_h, bins_w = (self.output_size, self.output_size) if isinstance(self.output_size, int) else \
            self.output_size
        rows = _pool_matrix(torch._shape_as_tensor(x)[2], bins_h, x)  # (bins_h, H)
        cols = _pool_matrix(torch._shape_as_tensor(x)[3], bins_w, x)  # (bins_w, W)
        return torch.einsum("ph,bchw,qw->bcpq", rows, x, cols)


class PPM(nn.ModuleList):
    """Pyramid pooling: per scale, adaptive average pooling to ``s x s`` and a 1x1 ConvModule.

    Entries are ``nn.Sequential(AdaptiveAvgPool2d, ConvModule)``, hence mmseg's ``psp_modules.{i}.1.conv``.

    Args:
        pool_scales: output sides of the poolings.
        in_channels: input channels ``C_in``.
        channels: output channels ``C`` of each branch.
        norm: norm of the ConvModules.
        align_corners: of the bilinear upsampling back to the input size.
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int, norm: str | None,
                 align_corners: bool) -> None:
        super().__init__(
            nn.Sequential(AdaptiveAvgPool2d(scale), ConvModule(in_channels, channels, 1, norm=norm))
            for scale in pool_scales
        )
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C_in, H, W)`` -> ``len(pool_scales)`` maps ``(B, C, H, W)``."""
        return [_resize(branch(x), x.shape[2:], self.align_corners) for branch in self]


@MODELS.register_module()
class UPerHead(nn.Module):
    """UPerNet head: PPM on the last level, FPN fusion of all levels, per-pixel classifier at the finest stride.

    Args:
        in_channels: channels of the levels picked by ``in_index``, e.g. ``backbone.out_channels``.
        channels: width ``C`` of every internal conv.
        num_classes: classes ``K``.
        pool_scales: PPM pooling sides.
        dropout_ratio: ``nn.Dropout2d`` rate before the classifier (mmseg's ``BaseDecodeHead``); 0 = none.
        norm: ``'BN'``, ``'SyncBN'`` or None for every ConvModule.
        align_corners: of every bilinear resize.
        in_index: which backbone levels to use, in order (mmseg's ``'multiple_select'``).

    Shapes:
        ``features``: the backbone list; ``features[in_index[i]]`` is ``(B, in_channels[i], H_i, W_i)``,
        finest first. Logits: ``(B, K, H_0, W_0)`` (``H/4 x W/4`` for a stride-4 first level).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 512,
        num_classes: int = 150,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout_ratio: float = 0.1,
        norm: str | None = "BN",
        align_corners: bool = False,
        in_index: Sequence[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.in_index = list(in_index)
        if len(self.in_channels) != len(self.in_index):
            raise ValueError(f"in_channels {self.in_channels} and in_index {self.in_index} differ in length")
        self.channels = channels
        self.num_classes = num_classes
        self.align_corners = align_corners

        self.psp_modules = PPM(pool_scales, self.in_channels[-1], channels, norm, align_corners)
        self.bottleneck = ConvModule(self.in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1,
                                     norm=norm)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1, norm=norm) for c in self.in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            ConvModule(channels, channels, 3, padding=1, norm=norm) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvModule(len(self.in_channels) * channels, channels, 3, padding=1, norm=norm)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg's init_cfg for conv_seg
        nn.init.zeros_(self.conv_seg.bias)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coarsest level ``(B, in_channels[-1], H, W)`` -> ``(B, C, H, W)``."""
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fused features before dropout and the classifier.

        Args:
            features: backbone maps; ``features[in_index[i]]`` is ``(B, in_channels[i], H_i, W_i)``.

        Returns:
            ``(B, C, H_0, W_0)`` at the finest used level.
        """
        if len(features) <= max(self.in_index):
            raise ValueError(f"UPerHead reads levels in_index={self.in_index} but got {len(features)} feature maps")
        inputs = [features[i] for i in self.in_index]
        check_channels(inputs, self.in_channels, "UPerHead")
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs[-1]))
        levels = len(laterals)
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)]
        outs.append(laterals[-1])
        outs = [outs[0]] + [_resize(out, outs[0].shape[2:], self.align_corners) for out in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def cls_seg(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, K, H, W)``: dropout then the 1x1 classifier."""
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.conv_seg(feats)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K, H_0, W_0)`` from the backbone maps (see ``forward_features``)."""
        return self.cls_seg(self.forward_features(features))
