"""ViTDet's ``SimpleFeaturePyramid`` (Li et al. 2022, detectron2 ``modeling/backbone/vit.py``): a pyramid from the
last ViT map alone.

Scale 4: deconv 2x2/2 (D -> D/2), norm, GELU, deconv (D/2 -> D/4); 2: deconv (D -> D/2); 1: nothing; 0.5: 2x2
max-pool. Each then gets a 1x1 and a 3x3 conv with a norm (bias only without one). An optional top block adds
one more level, ``max_pool2d(kernel 1, stride 2)`` of the coarsest (detectron2 ``LastLevelMaxPool``), as FPN's
fifth RPN level. Submodules are detectron2's ``simfp_{2..5}`` (stage = log2 of the stride), its convs holding their
norm as ``.norm``, so ViTDet's keys load by name.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from ..layers.conv import build_norm, check_channels
from ..registry import MODELS

SCALES = (4.0, 2.0, 1.0, 0.5)


def _norm(norm: str | None, channels: int) -> nn.Module:
    """detectron2's ``get_norm``: ``'LN'`` is a LayerNorm over channels of an NCHW map (eps 1e-6), ``'BN'`` /
    ``'SyncBN'`` batch norms, None or ``''`` nothing."""
    if not norm:
        return nn.Identity()
    return LayerNorm2d(channels, eps=1e-6) if norm == "LN" else build_norm(norm, channels)


class ConvNorm(nn.Conv2d):
    """detectron2's ``Conv2d(..., bias=not norm, norm=...)``: a conv holding its norm as ``.norm`` (same keys)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, norm: str | None) -> None:
        super().__init__(c_in, c_out, kernel, padding=kernel // 2, bias=not norm)
        self.norm = _norm(norm, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


def _rescale(dim: int, scale: float, norm: str | None) -> tuple[list[nn.Module], int]:
    """The layers taking ``(B, D, H, W)`` to ``scale`` times the size, and their output width."""
    if scale == 4.0:
        return [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), _norm(norm, dim // 2), nn.GELU(),
                nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)], dim // 4
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
    if scale == 1.0:
        return [], dim
    return [nn.MaxPool2d(kernel_size=2, stride=2)], dim


@MODELS.register_module()
class SimpleFeaturePyramid(nn.Module):
    """Strides 4..32 (and 64 with ``top_block``) from the last backbone map, every level ``out_channels`` wide.

    Args:
        in_channels: channels of the backbone's maps; only the last is used (ViTDet: block 11 of ViT-B).
        out_channels: width ``C`` of every output (ViTDet: 256).
        scale_factors: rescale of each level relative to the input map, from ``SCALES``.
        input_stride: the input map's stride (the ViT patch size), for ``strides``.
        norm: ``'LN'`` (ViTDet), ``'BN'``, ``'SyncBN'`` or None.
        top_block: add ``max_pool2d(1, stride=2)`` of the last level (detectron2 ``LastLevelMaxPool``).

    Shapes:
        inputs ``[..., (B, in_channels[-1], H, W)]``; outputs one ``(B, C, H * s, W * s)`` per scale factor (pooling
        floors), then ``(B, C, ceil(H_last / 2), ceil(W_last / 2))`` with ``top_block``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), input_stride: int = 16,
                 norm: str | None = "LN", top_block: bool = False) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.scale_factors = [float(s) for s in scale_factors]
        if any(s not in SCALES for s in self.scale_factors):
            raise ValueError(f"SimpleFeaturePyramid: scale_factors {list(scale_factors)} must be among {SCALES}")
        self.top_block = top_block
        self.num_outs = len(self.scale_factors) + int(top_block)
        self.strides = [int(input_stride / s) for s in self.scale_factors]
        self.stages: list[str] = []
        dim = self.in_channels[-1]
        for scale, stride in zip(self.scale_factors, self.strides):
            layers, width = _rescale(dim, scale, norm)
            stage = f"simfp_{int(math.log2(stride))}"
            self.add_module(stage, nn.Sequential(*layers, ConvNorm(width, out_channels, 1, norm),
                                                 ConvNorm(out_channels, out_channels, 3, norm)))
            self.stages.append(stage)
        if top_block:
            self.strides.append(self.strides[-1] * 2)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``[..., (B, D, H, W)]`` -> ``num_outs`` maps ``(B, out_channels, H_j, W_j)``, finest first."""
        check_channels(inputs, self.in_channels, "SimpleFeaturePyramid")
        outs = [getattr(self, stage)(inputs[-1]) for stage in self.stages]
        if self.top_block:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
        return tuple(outs)
