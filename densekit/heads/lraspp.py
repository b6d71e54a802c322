"""Lite R-ASPP head (MobileNetV3 paper, Howard et al. 2019), as mmsegmentation's ``LRASPPHead``.

Submodule names follow mmseg (``aspp_conv``, ``image_pool.1``, ``conv_up_input``, ``convs.conv{i}``,
``conv_ups.conv_up{i}``, ``conv_seg``), so its checkpoints load by name. mmseg's head is written here because
mmseg cannot be imported without a compiled mmcv (DESIGN.md §2); torchvision's ``LRASPPHead`` is a different
head (two inputs, adaptive pooling, no fusion of several levels).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvModule
from ..registry import MODELS


class _SigmoidConv(nn.Module):
    """mmcv ``ConvModule(in, out, 1, act_cfg=Sigmoid, bias=False)`` without a norm: the pooled gate."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


@MODELS.register_module()
class LRASPPHead(nn.Module):
    """Gate the last level by a pooled sigmoid branch, then fuse finer levels from coarse to fine.

    Args:
        in_channels: channels of the levels ``features[i] for i in in_index``, finest first; the last is the
            ASPP input, the others get a 1x1 branch each.
        in_index: which backbone levels to read (mmseg's ``input_transform='multiple_select'``).
        channels: width ``C`` of the head.
        branch_channels: width of each finer level's 1x1 branch (``len(in_channels) - 1`` of them).
        num_classes: classes ``K``.
        dropout_ratio: ``nn.Dropout2d`` rate before the classifier; 0 = none.
        norm: ``'BN'``, ``'SyncBN'`` or None, for ``aspp_conv`` and ``conv_ups``.
        norm_eps: their BatchNorm eps (mmseg's MobileNetV3 recipe: 0.001).
        pool_kernel, pool_stride: the image-pool ``AvgPool2d`` (mmseg: 49, (16, 20), sized for 64x128 maps:
            a 512x1024 crop at output stride 8); the map must be at least ``pool_kernel`` on each side.
        align_corners: kept for mmseg's config vocabulary; the gate is resized with ``align_corners=True`` and the
            fusion with ``False``, as mmseg does whatever this says.

    Shapes:
        ``features[in_index[i]]``: ``(B, in_channels[i], H_i, W_i)`` -> logits ``(B, K, H_0, W_0)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int] = (16, 24, 960),
        in_index: Sequence[int] = (0, 1, 2),
        channels: int = 128,
        branch_channels: Sequence[int] = (32, 64),
        num_classes: int = 19,
        dropout_ratio: float = 0.1,
        norm: str | None = "BN",
        norm_eps: float = 1e-5,
        pool_kernel: int = 49,
        pool_stride: tuple[int, int] = (16, 20),
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_index) or len(branch_channels) != len(in_channels) - 1:
            raise ValueError(f"LRASPPHead: need len(in_index) == len(in_channels) == len(branch_channels) + 1, got "
                             f"in_channels={list(in_channels)}, in_index={list(in_index)}, "
                             f"branch_channels={list(branch_channels)}")
        self.in_channels, self.in_index = list(in_channels), list(in_index)
        self.channels, self.num_classes, self.align_corners = channels, num_classes, align_corners
        self.branch_channels = list(branch_channels)
        self.convs = nn.Sequential()
        self.conv_ups = nn.Sequential()
        for i, width in enumerate(branch_channels):
            self.convs.add_module(f"conv{i}", nn.Conv2d(in_channels[i], width, 1, bias=False))
            self.conv_ups.add_module(f"conv_up{i}", ConvModule(channels + width, channels, 1, norm=norm))
        self.conv_up_input = nn.Conv2d(channels, channels, 1)
        self.aspp_conv = ConvModule(in_channels[-1], channels, 1, norm=norm)
        self.image_pool = nn.Sequential(nn.AvgPool2d(kernel_size=pool_kernel, stride=tuple(pool_stride)),
                                        _SigmoidConv(in_channels[-1], channels))
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = norm_eps
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg's init_cfg for conv_seg
        nn.init.zeros_(self.conv_seg.bias)

    def forward_features(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Selected levels -> fused ``(B, C, H_0, W_0)`` before dropout and the classifier."""
        inputs = [features[i] for i in self.in_index]
        for x, c, i in zip(inputs, self.in_channels, self.in_index):
            if x.dim() != 4 or x.shape[1] != c:
                raise ValueError(f"LRASPPHead level {i}: expected (B, {c}, H, W), got {tuple(x.shape)}")
        x = inputs[-1]
        pool = self.image_pool[0].kernel_size
        if min(x.shape[-2:]) < pool:
            raise ValueError(f"LRASPPHead: the last level {tuple(x.shape[-2:])} is smaller than the image pool "
                             f"kernel {pool}; lower pool_kernel or use larger crops")
        gate = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = self.conv_up_input(self.aspp_conv(x) * gate)
        for i in range(len(self.branch_channels) - 1, -1, -1):
            x = F.interpolate(x, size=inputs[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.conv_ups[i](torch.cat([x, self.convs[i](inputs[i])], dim=1))
        return x

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K, H_0, W_0)`` at the finest selected level."""
        x = self.forward_features(features)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(x)
