"""Swin Transformer V2 backbone (Liu et al. 2022) for dense prediction, at any input size.

Read top to bottom: block, stage, backbone, presets. What differs from V1 (``swin.py``): scaled cosine
attention with a continuous, log-spaced position bias (``layers.cosine_attention``), res-post-norm blocks
(the norm after attention and MLP, inside the residual), and patch merging that reduces ``4C -> 2C`` before
its norm. Maps are NHWC inside, NCHW at the output, one per stage in ``out_indices``, taken before the stage's
patch merging (timm ``forward_intermediates``, HF ``Swinv2Backbone``).

Any ``H x W`` works as in V1: pad to the patch, then each block pads to window multiples, shifts and masks on
the padded grid; a stage no larger than the window uses one window of its smaller side and no shift.
"""
from __future__ import annotations

import torch
import torch.utils.checkpoint
from timm.layers import DropPath, Mlp
from torch import nn

from ..layers.cosine_attention import CosineWindowAttention
from ..layers.patch import PatchEmbed, PatchMerging
from ..registry import register_backbone
from .base import local_checkpoint
from .pretrained import load_pretrained_v2
from .swin import SwinFeatures, check_layout, init_swin_weights


class SwinV2Block(nn.Module):
    """(Shifted-)window cosine attention and an MLP, each post-normed inside the residual:
    ``x = x + drop_path(norm1(attn(x)))``, ``x = x + drop_path(norm2(mlp(x)))``.

    Args:
        dim, num_heads, window_size: channels, heads, window side.
        pretrained_window_size: window the weights were trained at (0: none), see ``CosineWindowAttention``.
        shift: shift windows by ``W // 2`` (odd blocks of a stage).
        mlp_ratio, qkv_bias, drop, attn_drop, drop_path, attn_impl: as in V1's ``SwinBlock``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, pretrained_window_size: int = 0,
                 shift: bool = False, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.attn = CosineWindowAttention(dim, num_heads, window_size, pretrained_window_size, qkv_bias, attn_drop,
                                          drop, attn_impl)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.norm2 = nn.LayerNorm(dim)

    def window_and_shift(self, height: int, width: int) -> tuple[int, int]:
        """Window side and shift at this resolution: one window of the smaller side, no shift, on a stage no
        larger than the window (official Swin V2)."""
        if min(height, width) <= self.window_size:
            return min(height, width), 0
        return self.window_size, self.shift_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        x = x + self.drop_path(self.norm1(self.attn(x, window, shift)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMergingV2(PatchMerging):
    """V2 patch merging: concatenate each 2x2 neighbourhood (V1's order), reduce ``4C -> 2C``, then LayerNorm(2C).

    Args:
        dim: input channels ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        return self.norm(self.reduction(self.neighbours(x)))


class SwinV2Stage(nn.Module):
    """``depth`` V2 blocks alternating regular and shifted windows, then optional V2 patch merging.

    Args:
        dim, depth, num_heads, window_size: as in V1's ``SwinStage``.
        pretrained_window_size: the stage's pretrained window (0: none).
        drop_paths: stochastic depth rate of each block.
        downsample: end with ``PatchMergingV2`` (every stage but the last).
        with_cp: activation checkpointing of each block while training.
        mlp_ratio, qkv_bias, drop, attn_drop, attn_impl: as in ``SwinV2Block``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, pretrained_window_size: int,
                 drop_paths: list[float], downsample: bool, with_cp: bool = False, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, num_heads, window_size, pretrained_window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop,
                        attn_drop, drop_paths[i], attn_impl)
            for i in range(depth)
        )
        self.downsample = PatchMergingV2(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, C)`` -> (stage output ``(B, H, W, C)``, next input ``(B, H/2, W/2, 2C)``)."""
        x = self.run_blocks(x)
        return x, (self.downsample(x) if self.downsample is not None else x)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in turn, each checkpointed while training with ``with_cp``: ``(B, H, W, C)`` -> same.
        (Swin-Unet's V2 decoder stages run their blocks through it.)"""
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _per_stage(value: int | tuple[int, ...], stages: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * stages
    if len(value) != stages:
        raise ValueError(f"{name} {tuple(value)} must give one value per stage ({stages})")
    return tuple(int(v) for v in value)


class SwinTransformerV2(SwinFeatures):
    """Swin Transformer V2 returning NCHW maps at strides 4, 8, 16, 32.

    State-dict layout (what ``densekit.convert.swin_v2`` maps the official, timm and HF layouts to)::

        patch_embed.proj, patch_embed.norm
        stages.{i}.blocks.{j}.{attn.qkv.weight, attn.q_bias, attn.v_bias, attn.logit_scale, attn.cpb_mlp.{0,2},
                               attn.proj, norm1, mlp.fc1, mlp.fc2, norm2}
        stages.{i}.downsample.{reduction, norm}    (i < last; reduction first, norm over 2C)
        out_norms.{i}                              (i in out_indices, when out_norm)

    Args:
        embed_dim, depths, num_heads, mlp_ratio, qkv_bias, patch_size, in_chans: the architecture.
        window_size: attention window side.
        pretrained_window_size: window the weights were trained at, one int or one per stage; the position
            bias MLP reads coordinates normalised by it, so weights move to another ``window_size`` unchanged
            (0: taken from the ``pretrained`` file's name or meta when it says, else the window in use).
        drop_rate, attn_drop_rate, drop_path_rate: dropout rates and stochastic depth (linear over blocks).
        out_indices, out_norm, frozen_stages, norm_eval, with_cp, attn_impl: as in V1's ``SwinTransformer``.
        pretrained: local checkpoint (official, timm or HF layout), converted on load.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 8,
        pretrained_window_size: int | tuple[int, ...] = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_size: int = 4,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        out_norm: bool = True,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        attn_impl: str = "sdpa",
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        check_layout(depths, num_heads, out_indices)
        self.out_indices = tuple(out_indices)
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        self.window_size, self.patch_size, self.in_chans = window_size, patch_size, in_chans
        self.pretrained_window_size = _per_stage(pretrained_window_size, len(depths), "pretrained_window_size")
        # Given windows win over what a checkpoint's name or meta says (backbones/pretrained.py).
        self.pretrained_window_given = any(self.pretrained_window_size)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.out_channels = [dims[i] for i in self.out_indices]
        self.strides = [patch_size * 2**i for i in self.out_indices]

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList(
            SwinV2Stage(dims[i], depth, num_heads[i], window_size, self.pretrained_window_size[i],
                        rates[sum(depths[:i]):sum(depths[:i + 1])], downsample=i < len(depths) - 1, with_cp=with_cp,
                        mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                        attn_impl=attn_impl)
            for i, depth in enumerate(depths)
        )
        self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(dims[i]) for i in self.out_indices}) if out_norm else None
        self.apply(init_swin_weights)

        pretrained = local_checkpoint(pretrained, type(self).__name__)
        if pretrained:
            load_pretrained_v2(self, pretrained)
        self.freeze()

    def set_pretrained_window_size(self, windows: int | tuple[int, ...]) -> None:
        """Normalise each stage's position-bias coordinates by ``windows`` (one, or one per stage) from now on: the
        windows a loaded checkpoint was trained at. No weight changes; the coordinates are recomputed on use."""
        self.pretrained_window_size = _per_stage(windows, len(self.stages), "pretrained_window_size")
        for stage, window in zip(self.stages, self.pretrained_window_size):
            for block in stage.blocks:
                block.attn.pretrained_window_size = window

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, H/4, W/4, C)``: the patch embedding (V2 has no absolute one)."""
        return self.pos_drop(self.patch_embed(x))


@register_backbone
def swinv2_t(pretrained: str | None = None, **kwargs) -> SwinTransformerV2:
    """Swin V2-T: embed 96, depths 2-2-6-2, heads 3-6-12-24."""
    return SwinTransformerV2(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), pretrained=pretrained,
                             **kwargs)


@register_backbone
def swinv2_s(pretrained: str | None = None, **kwargs) -> SwinTransformerV2:
    """Swin V2-S: embed 96, depths 2-2-18-2, heads 3-6-12-24."""
    return SwinTransformerV2(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), pretrained=pretrained,
                             **kwargs)


@register_backbone
def swinv2_b(pretrained: str | None = None, **kwargs) -> SwinTransformerV2:
    """Swin V2-B: embed 128, depths 2-2-18-2, heads 4-8-16-32."""
    return SwinTransformerV2(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), pretrained=pretrained,
                             **kwargs)


@register_backbone
def swinv2_l(pretrained: str | None = None, **kwargs) -> SwinTransformerV2:
    """Swin V2-L: embed 192, depths 2-2-18-2, heads 6-12-24-48."""
    return SwinTransformerV2(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), pretrained=pretrained,
                             **kwargs)
