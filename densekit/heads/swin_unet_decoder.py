"""Swin-Unet decoder (Cao et al. 2021): the encoder mirrored, with skip connections, back to full resolution.

Read top to bottom: the up stage, then the decoder. Maps are NHWC inside, as in densekit's Swin.
The official ``SwinTransformerSys`` (``networks/swin_transformer_unet_skip_expand_decoder_sys.py``)
and this decoder relate as follows (official name -> densekit name, ``n`` encoder stages)::

    layers_up.0 (PatchExpand of the bottleneck)                -> expand
    concat_back_dim.k (Linear 2C -> C), k >= 1                 -> stages.{k-1}.concat
    layers_up.k.blocks.j (Swin blocks), k >= 1                 -> stages.{k-1}.blocks.j
    layers_up.k.upsample (PatchExpand), 1 <= k < n - 1         -> stages.{k-1}.upsample
    norm_up, up (FinalPatchExpand_X4), output (1x1 conv)       -> norm, up, conv_seg

Official values (and why): ``layers_up.k`` has the depth, heads and per-block stochastic-depth rates of
the encoder stage ``n-1-k`` it mirrors. ``SwinTransformerSys`` accepts ``depths_decoder`` (default
``[1, 2, 2, 2]``; the released ``swin_tiny_patch4_window7_224_lite.yaml`` says ``DECODER_DEPTHS
[2, 2, 2, 1]``) but never uses it (it is only printed), so the released models have decoder depths
``depths[n-2::-1]`` = ``(2, 2, 2)`` for encoder depths ``(2, 2, 2, 2)``; that is the default here
(``SwinUnet`` passes the mirrored encoder values), and ``depths`` stays configurable.

Any size: each upsampled map is cropped to the size of the skip it is joined with (the encoder rounds
odd sides up when it merges patches), so sizes that are not multiples of 32 need no resizing. Blocks
shrink their window on maps no larger than it and pad to window multiples, as the encoder's do.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..backbones.swin import SwinStage, init_swin_weights
from ..layers.patch import FinalPatchExpand, PatchExpand
from ..registry import MODELS


class SwinUpStage(SwinStage):
    """Join a skip: concatenate it, project ``2C -> C``, run Swin blocks (a ``SwinStage`` without patch merging),
    optionally expand 2x.

    Args:
        dim: channels ``C`` of this stage (and of its skip).
        depth: Swin blocks (alternating regular and shifted windows).
        num_heads: attention heads.
        window_size: window side.
        drop_paths: stochastic depth of each block (``depth`` values).
        upsample: end with ``PatchExpand`` (every stage but the last).
        with_cp: activation checkpointing of each block while training.
        mlp_ratio, qkv_bias, drop, attn_drop, attn_impl: as in ``SwinBlock``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, drop_paths: Sequence[float],
                 upsample: bool, with_cp: bool = False, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, attn_impl: str = "sdpa") -> None:
        if len(drop_paths) != depth:
            raise ValueError(f"{len(drop_paths)} drop-path rates for {depth} blocks")
        # ``concat`` is made and registered first, as before this stage reused SwinStage: a seed then draws the
        # same initial weights, and optimizer states in existing checkpoints (stored by parameter position) fit.
        concat = nn.Linear(2 * dim, dim)
        super().__init__(dim, depth, num_heads, window_size, list(drop_paths), downsample=False, with_cp=with_cp,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop, attn_impl=attn_impl)
        self._modules = {"concat": concat, **self._modules}  # ``downsample`` stays None: no parameters
        self.upsample = PatchExpand(dim) if upsample else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, h, w, C)`` (``h, w`` >= the skip's) and ``skip`` ``(B, H, W, C)`` ->
        ``(B, 2H, 2W, C/2)`` (or ``(B, H, W, C)`` without ``upsample``)."""
        x = self.run_blocks(self.join(x, skip))
        return self.upsample(x) if self.upsample is not None else x

    def join(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` and ``skip`` as in ``forward`` -> ``(B, H, W, C)``: both side by side, projected by ``concat``."""
        return self.concat(self.beside_skip(x, skip))

    @staticmethod
    def beside_skip(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` cropped to the skip's size and concatenated with it: ``(B, H, W, 2C)``."""
        height, width = skip.shape[1:3]
        if x.shape[1] < height or x.shape[2] < width:
            raise ValueError(f"decoder map {tuple(x.shape[1:3])} is smaller than its skip {(height, width)}")
        return torch.cat([x[:, :height, :width], skip], dim=-1)


@MODELS.register_module()
class SwinUnetDecoder(nn.Module):
    """Bottleneck and encoder skips -> class logits at the input resolution.

    Args:
        in_channels: channels of the encoder stages, finest first (``[C, 2C, 4C, 8C]`` for Swin-T);
            the last is the bottleneck's.
        num_classes: classes ``K``.
        depths: blocks of each decoder stage, coarsest first (``len(in_channels) - 1`` values; official:
            the mirrored encoder depths, ``(2, 2, 2)``).
        num_heads: heads of each decoder stage, coarsest first (official: the mirrored encoder heads,
            ``(12, 6, 3)`` for Swin-T).
        window_size: attention window side.
        drop_path_rates: per stage, per block stochastic depth (coarsest stage first); None = no drop path.
            ``SwinUnet`` passes the rates of the mirrored encoder blocks (official).
        patch_size: factor of the final expansion (the encoder's patch size).
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, with_cp, attn_impl: as in the encoder's blocks.
    """

    def __init__(self, in_channels: Sequence[int] = (96, 192, 384, 768), num_classes: int = 9,
                 depths: Sequence[int] = (2, 2, 2), num_heads: Sequence[int] = (12, 6, 3), window_size: int = 7,
                 drop_path_rates: Sequence[Sequence[float]] | None = None, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 with_cp: bool = False, attn_impl: str = "sdpa") -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        num_up = len(in_channels) - 1
        if num_up < 1 or any(b != 2 * a for a, b in zip(in_channels, in_channels[1:])):
            raise ValueError(f"in_channels must double from stage to stage (Swin), got {in_channels}")
        if len(depths) != num_up or len(num_heads) != num_up:
            raise ValueError(f"{len(in_channels)} encoder stages need {num_up} decoder depths and heads, "
                             f"got depths {list(depths)} and num_heads {list(num_heads)}")
        if drop_path_rates is None:
            drop_path_rates = [[0.0] * d for d in depths]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.expand = PatchExpand(in_channels[-1])
        self.stages = nn.ModuleList(
            SwinUpStage(in_channels[num_up - 1 - k], depths[k], num_heads[k], window_size, list(drop_path_rates[k]),
                        upsample=k < num_up - 1, with_cp=with_cp, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                        drop=drop_rate, attn_drop=attn_drop_rate, attn_impl=attn_impl)
            for k in range(num_up)
        )
        self.norm = nn.LayerNorm(in_channels[0])
        self.up = FinalPatchExpand(in_channels[0], patch_size)
        self.conv_seg = nn.Conv2d(in_channels[0], num_classes, kernel_size=1, bias=False)
        self.apply(init_swin_weights)  # official; the 1x1 conv keeps PyTorch's default

    def forward(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode.

        Args:
            bottleneck: ``(B, h, w, in_channels[-1])``, the normalised output of the last encoder stage.
            skips: the input of each encoder stage, finest first: ``(B, H_i, W_i, in_channels[i])``
                (the last one, the bottleneck stage's input, is not used, as officially).

        Returns:
            Logits ``(B, K, patch_size * H_0, patch_size * W_0)``.
        """
        if len(skips) < len(self.stages):
            raise ValueError(f"{len(skips)} skips for {len(self.stages)} decoder stages")
        x = self.expand(bottleneck)
        for k, stage in enumerate(self.stages):
            x = stage(x, skips[len(self.stages) - 1 - k])
        return self.classify(self.norm(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The final 4x expansion and the 1x1 classifier: ``(B, h, w, C)`` after ``norm`` -> logits
        ``(B, K, s*h, s*w)``. (``densekit.accel.swin`` runs it in chunks of tokens on the CPU.)"""
        return self.conv_seg(self.up(x).permute(0, 3, 1, 2))
