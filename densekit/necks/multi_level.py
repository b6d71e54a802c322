"""mmsegmentation's ``MultiLevelNeck`` (ViT-UPerNet, SETR-MLA): one-scale ViT maps resized into a pyramid.

Each input gets a 1x1 lateral conv, is rescaled bilinearly by its factor (ViT-B/16 maps at stride 16 with
``scales=(4, 2, 1, 0.5)`` give strides 4, 8, 16, 32), then a 3x3 conv. Submodule names are mmseg's
(``lateral_convs.{i}.conv``, ``convs.{i}.conv``), so its checkpoints load by name.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvModule, check_channels
from ..registry import MODELS


@MODELS.register_module()
class MultiLevelNeck(nn.Module):
    """1x1 laterals, per-level bilinear rescale, 3x3 convs (mmseg ``MultiLevelNeck``; no norm, no activation).

    Args:
        in_channels: channels of each input map (e.g. ``[768] * 4``); a single input feeds every output.
        out_channels: width ``C`` of every output.
        scales: rescale factor of each output (mmseg's default ``(0.5, 1, 2, 4)``; ViT-UPerNet uses
            ``(4, 2, 1, 0.5)``); one output per factor.
        norm: ``'BN'``, ``'SyncBN'`` or None (mmseg's ``norm_cfg``; its default None).
        act: a ReLU after every conv (mmseg's ``act_cfg``; its default None = no activation).

    Shapes:
        inputs ``[(B, in_channels[i], H, W)]``; outputs ``len(scales)`` maps ``(B, C, floor(H * s), floor(W * s))``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int,
                 scales: Sequence[float] = (0.5, 1, 2, 4), norm: str | None = None, act: bool = False) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.scales = list(scales)
        self.num_outs = len(self.scales)
        if len(self.in_channels) not in (1, self.num_outs):
            raise ValueError(f"MultiLevelNeck: {len(self.in_channels)} in_channels for {self.num_outs} scales "
                             f"{self.scales}: give one input, or one per scale")
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm=norm, act=act) for c in self.in_channels)
        self.convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm=norm, act=act) for _ in self.scales)
        for module in self.modules():  # mmseg: xavier_init(distribution='uniform'), zero bias
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``[(B, in_channels[i], H, W)]`` -> ``len(scales)`` maps ``(B, out_channels, H * s, W * s)``."""
        check_channels(inputs, self.in_channels, "MultiLevelNeck")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        if len(laterals) == 1:
            laterals = laterals * self.num_outs
        # mmseg's resize(..., scale_factor, mode='bilinear'): align_corners False
        return tuple(conv(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))
                     for conv, x, s in zip(self.convs, laterals, self.scales))
