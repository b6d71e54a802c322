"""Swin-Unet's decoder on Swin V2 blocks: what ``SwinUnet(version=2)`` decodes with.

Read top to bottom: the up stage, then the decoder. Everything but the blocks is the V1 decoder's
(``heads/swin_unet_decoder.py``): the bottleneck ``PatchExpand``, each stage's skip concatenation and ``2C -> C``
projection, the ``PatchExpand`` between stages, the final norm, ``FinalPatchExpand`` and the 1x1 classifier, with
the same state-dict names. The blocks are ``backbones/swin_v2.py``'s ``SwinV2Block`` (scaled cosine attention,
log-spaced continuous position bias, res-post-norm), so a V2 ImageNet checkpoint mirrors into them key for key.

No published model or paper has this variant; it is Swin-Unet with the Swin V2 encoder's blocks in the decoder as
well, so that the official ``load_from`` mirroring (decoder stage ``k`` <- encoder stage ``n-2-k``) keeps working.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones.swin import init_swin_weights
from ..backbones.swin_v2 import SwinV2Stage
from ..heads.swin_unet_decoder import SwinUnetDecoder, SwinUpStage
from ..layers.patch import PatchExpand
from ..registry import MODELS


class SwinV2UpStage(SwinV2Stage):
    """Join a skip (concatenate, project ``2C -> C``), run Swin V2 blocks, optionally expand 2x: ``SwinUpStage``
    with V2 blocks.

    Args:
        dim, depth, num_heads, window_size, drop_paths, upsample, with_cp, mlp_ratio, qkv_bias, drop, attn_drop,
            attn_impl: as in ``SwinUpStage``.
        pretrained_window_size: window the mirrored weights were trained at (0: none), see ``SwinV2Block``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, pretrained_window_size: int,
                 drop_paths: Sequence[float], upsample: bool, with_cp: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, attn_impl: str = "sdpa") -> None:
        if len(drop_paths) != depth:
            raise ValueError(f"{len(drop_paths)} drop-path rates for {depth} blocks")
        concat = nn.Linear(2 * dim, dim)
        super().__init__(dim, depth, num_heads, window_size, pretrained_window_size, list(drop_paths),
                         downsample=False, with_cp=with_cp, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop,
                         attn_drop=attn_drop, attn_impl=attn_impl)
        # ``concat`` first in the state dict, as in the V1 up stage (the same module order, key for key).
        self._modules = {"concat": concat, **self._modules}
        self.upsample = PatchExpand(dim) if upsample else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, h, w, C)`` (``h, w`` >= the skip's) and ``skip`` ``(B, H, W, C)`` ->
        ``(B, 2H, 2W, C/2)`` (or ``(B, H, W, C)`` without ``upsample``)."""
        x = self.run_blocks(self.concat(SwinUpStage.beside_skip(x, skip)))
        return self.upsample(x) if self.upsample is not None else x


def _per_stage(value: int | Sequence[int], stages: int) -> list[int]:
    if isinstance(value, int):
        return [value] * stages
    if len(value) != stages:
        raise ValueError(f"pretrained_window_size {list(value)} must give one value per decoder stage ({stages})")
    return [int(v) for v in value]


@MODELS.register_module()
class SwinUnetV2Decoder(SwinUnetDecoder):
    """``SwinUnetDecoder`` whose up stages are ``SwinV2UpStage``: the same arguments and state-dict layout, plus

    Args:
        pretrained_window_size: per decoder stage (coarsest first) or one int: the window the mirrored encoder
            stage's weights were trained at (0: normalise the position bias by the window in use).
            ``SwinUnet(version=2)`` passes the mirrored encoder stages' values.
    """

    def __init__(self, in_channels: Sequence[int] = (96, 192, 384, 768), num_classes: int = 9,
                 depths: Sequence[int] = (2, 2, 2), num_heads: Sequence[int] = (12, 6, 3), window_size: int = 8,
                 pretrained_window_size: int | Sequence[int] = 0,
                 drop_path_rates: Sequence[Sequence[float]] | None = None, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 with_cp: bool = False, attn_impl: str = "sdpa") -> None:
        # The V1 constructor checks the arguments and builds everything but the blocks; its V1 up stages are then
        # replaced in place (same key, same position), which costs one throwaway build of a few small stages.
        super().__init__(in_channels, num_classes, depths, num_heads, window_size, drop_path_rates, patch_size,
                         mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, with_cp, attn_impl)
        num_up = len(self.stages)
        windows = _per_stage(pretrained_window_size, num_up)
        rates = drop_path_rates if drop_path_rates is not None else [[0.0] * d for d in depths]
        self.stages = nn.ModuleList(
            SwinV2UpStage(self.in_channels[num_up - 1 - k], depths[k], num_heads[k], window_size, windows[k],
                          list(rates[k]), upsample=k < num_up - 1, with_cp=with_cp, mlp_ratio=mlp_ratio,
                          qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate, attn_impl=attn_impl)
            for k in range(num_up)
        )
        self.stages.apply(init_swin_weights)  # as the V2 encoder initialises its blocks


__all__ = ["SwinUnetV2Decoder", "SwinV2UpStage"]
