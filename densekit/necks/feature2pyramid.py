"""mmsegmentation's ``Feature2Pyramid`` (BEiT/MAE-UPerNet): four one-scale ViT maps rescaled to strides 4..32.

Rescale 4: deconv 2x2/2, norm, GELU, deconv 2x2/2; 2: one deconv; 1: identity; 0.5: 2x2 max-pool; 0.25: 4x4
max-pool. Submodule names are mmseg's (``upsample_4x.{0,1,3}``, ``upsample_2x.0``), so its checkpoints load.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.conv import build_norm, check_channels
from ..registry import MODELS

RESCALES = (4, 2, 1, 0.5, 0.25)


def _deconv(channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)


@MODELS.register_module()
class Feature2Pyramid(nn.Module):
    """One op per input map: ``(4, 2, 1, 0.5)`` (or ``(2, 1, 0.5, 0.25)``) upsample / keep / pool it.

    Args:
        embed_dim: channels ``D`` of the ViT maps (kept by every op).
        rescales: one factor per input, from ``RESCALES``, in mmseg's order (it applies ``upsample_4x``,
            ``upsample_2x``, ``identity``, ``downsample_2x`` or, without 4, ``upsample_2x`` ... ``downsample_4x``).
        norm: the norm inside ``upsample_4x``: ``'BN'`` or ``'SyncBN'`` (mmseg's default).

    Shapes:
        inputs ``[(B, D, H, W)] * len(rescales)``; outputs ``(B, D, H * r, W * r)`` (pooling floors odd sizes).
    """

    def __init__(self, embed_dim: int, rescales: Sequence[float] = (4, 2, 1, 0.5), norm: str = "SyncBN") -> None:
        super().__init__()
        self.rescales = list(rescales)
        unknown = [r for r in self.rescales if r not in RESCALES]
        if unknown:
            raise ValueError(f"Feature2Pyramid: rescales {unknown} not among {RESCALES}")
        self.in_channels = [embed_dim] * len(self.rescales)
        self.out_channels, self.num_outs = embed_dim, len(self.rescales)
        self.upsample_4x = nn.Sequential(_deconv(embed_dim), build_norm(norm, embed_dim), nn.GELU(),
                                         _deconv(embed_dim)) if 4 in self.rescales else None
        self.upsample_2x = nn.Sequential(_deconv(embed_dim)) if 2 in self.rescales else None
        self.identity = nn.Identity() if 1 in self.rescales else None
        self.downsample_2x = nn.MaxPool2d(kernel_size=2, stride=2) if 0.5 in self.rescales else None
        self.downsample_4x = nn.MaxPool2d(kernel_size=4, stride=4) if 0.25 in self.rescales else None

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``[(B, D, H, W)]`` -> one rescaled map per input, in mmseg's op order."""
        check_channels(inputs, self.in_channels, "Feature2Pyramid")
        if self.upsample_4x is not None:
            ops = [self.upsample_4x, self.upsample_2x, self.identity, self.downsample_2x]
        else:
            ops = [self.upsample_2x, self.identity, self.downsample_2x, self.downsample_4x]
        return tuple(op(x) for op, x in zip(ops, inputs))
