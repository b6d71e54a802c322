"""Swin Transformer backbone (Liu et al. 2021) for dense prediction, at any input size.

Read top to bottom: block, stage, backbone, presets. Feature maps are NHWC inside (every op but
the patch convolution is per token or per window) and NCHW at the output, one per stage in
``out_indices``, taken before the stage's patch merging, as mmsegmentation, timm
``forward_intermediates`` and HuggingFace ``SwinBackbone`` do.

Any ``H x W`` works: the input is padded to the patch size, each block pads its normalised input
to window multiples (the shift mask is built on the padded grid) and crops back, and patch
merging pads odd sides. A stage no larger than the window uses one window of its smaller side
and no shift (official Swin behaviour).
"""
from __future__ import annotations

import torch
import torch.utils.checkpoint
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from ..layers.patch import PatchEmbed, PatchMerging
from ..layers.rel_pos_bias import resize_abs_pos_embed
from ..layers.window_attention import WindowAttention
from ..registry import register_backbone
from .base import Backbone, local_checkpoint
from .pretrained import load_pretrained


class SwinBlock(nn.Module):
    """(Shifted-)window attention and an MLP, each pre-normed and residual.

    Args:
        dim: channels ``C``.
        num_heads: attention heads.
        window_size: window side ``W``.
        shift: shift windows by ``W // 2`` (odd blocks of a stage).
        mlp_ratio: MLP hidden width over ``C``.
        qkv_bias: bias on the q, k, v projection.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of this block.
        attn_impl: ``'sdpa'`` or ``'reference'`` (see ``WindowAttention``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop, attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def window_and_shift(self, height: int, width: int) -> tuple[int, int]:
        """Window side and shift at this resolution: a stage no larger than the window gets one
        window of its smaller side and no shift (official Swin; timm does it per axis)."""
        if min(height, width) <= self.window_size:
            return min(height, width), 0
        return self.window_size, self.shift_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        x = x + self.drop_path(self.attn(self.norm1(x), window, shift))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating regular and shifted windows, then optional patch merging.

    Args:
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: window side.
        drop_paths: stochastic depth rate of each block (``depth`` values).
        downsample: end with ``PatchMerging`` (every stage but the last).
        with_cp: activation checkpointing of each block while training.
        mlp_ratio, qkv_bias, drop, attn_drop, attn_impl: as in ``SwinBlock``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_paths: list[float],
        downsample: bool,
        with_cp: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop, attn_drop,
                      drop_paths[i], attn_impl)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, H, W, C)`` -> (stage output ``(B, H, W, C)``, next input ``(B, H/2, W/2, 2C)``)."""
        x = self.run_blocks(x)
        return x, (self.downsample(x) if self.downsample is not None else x)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in turn, each checkpointed while training with ``with_cp``: ``(B, H, W, C)`` -> same."""
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class SwinFeatures(Backbone):
    """What the Swin V1 and V2 backbones share once built: the stage loop, the NCHW outputs and the frozen stages.

    A subclass builds ``patch_embed``, ``pos_drop``, ``stages`` (each returning its output and the next stage's
    input), ``out_norms`` (or None), ``out_indices``, ``in_chans`` and ``frozen_stages``, and defines ``embed``.
    """

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> the first stage's input ``(B, H_0, W_0, C)``."""
        raise NotImplementedError

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.patch_embed, self.pos_drop]
        for i in range(min(self.frozen_stages, len(self.stages))):
            modules.append(self.stages[i])
            if self.out_norms is not None and str(i) in self.out_norms:
                modules.append(self.out_norms[str(i)])
        return modules

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_chans, H, W)`` -> one ``(B, C_i, ceil(H/s_i), ceil(W/s_i))`` map per out index."""
        outs = []
        for i, (_, out) in enumerate(self.forward_stages(x, max(self.out_indices) + 1)):
            if i in self.out_indices:
                if self.out_norms is not None:
                    out = self.out_norms[str(i)](out)
                # A permuted view: NCHW shape, channels_last memory, which convolutions take as is.
                outs.append(out.permute(0, 3, 1, 2))
        return outs

    def forward_stages(self, x: torch.Tensor, num_stages: int | None = None
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The embedding (``embed``) and the first ``num_stages`` stages (all by
        default), NHWC and without output norms: per stage, its input ``(B, H_i, W_i, C_i)`` and its output
        before patch merging ``(B, H_i, W_i, C_i)``. ``forward`` returns the outputs; Swin-Unet's skips are the
        inputs and its bottleneck the last stage's output (which has no patch merging).

        Args:
            x: ``(B, in_chans, H, W)``.
            num_stages: how many stages to run.
        """
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        x = self.embed(x)
        maps = []
        for stage in self.stages[:num_stages]:
            out, following = stage(x)
            maps.append((x, out))
            x = following
        return maps


class SwinTransformer(SwinFeatures):
    """Swin Transformer returning NCHW maps at strides 4, 8, 16, 32.

    State-dict layout (what ``densekit.convert`` maps every other layout to)::

        patch_embed.proj, patch_embed.norm, [absolute_pos_embed]
        stages.{i}.blocks.{j}.{norm1, attn.relative_position_bias_table, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}
        stages.{i}.downsample.{norm, reduction}    (i < 3, official [x0, x1, x2, x3] channel order)
        out_norms.{i}                              (i in out_indices, when out_norm)

    Args:
        embed_dim: channels of stage 0 (doubling per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: attention window side.
        mlp_ratio: MLP width over channels.
        qkv_bias: bias on q, k, v.
        patch_size: patch embedding stride.
        in_chans: input channels.
        ape: learned absolute position embedding (``(1, N, C)`` for ``pretrain_img_size``, resized
            bicubically to other inputs).
        pretrain_img_size: image side the absolute position embedding is laid out for.
        drop_rate, attn_drop_rate: dropout rates.
        drop_path_rate: stochastic depth, rising linearly to this value over all blocks.
        out_indices: stages whose outputs are returned.
        out_norm: LayerNorm on each returned map; False returns raw stage outputs
            (timm ``forward_intermediates(norm=False)``).
        frozen_stages: -1 trains all; ``k >= 0`` freezes the patch embedding and the first ``k`` stages.
        norm_eval: keep BatchNorms in eval (Swin has none; accepted for the common contract).
        with_cp: activation checkpointing.
        attn_impl: ``'sdpa'`` (one SDPA call per block) or ``'reference'`` (per-window matmuls) attention.
        pretrained: local checkpoint in any supported layout, converted and resized on load.
        bias_resize: how pretrained bias tables are resized to ``window_size``: ``'bicubic'``
            (official Swin) or ``'geometric'`` (timm).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_size: int = 4,
        in_chans: int = 3,
        ape: bool = False,
        pretrain_img_size: int = 224,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        out_norm: bool = True,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        attn_impl: str = "sdpa",
        pretrained: str | None = None,
        bias_resize: str = "bicubic",
    ) -> None:
        super().__init__()
        check_layout(depths, num_heads, out_indices)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.window_size, self.patch_size, self.in_chans = window_size, patch_size, in_chans
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.out_channels = [dims[i] for i in self.out_indices]
        self.strides = [patch_size * 2**i for i in self.out_indices]

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.pretrain_grid = (pretrain_img_size // patch_size, pretrain_img_size // patch_size)
        self.absolute_pos_embed = _abs_pos_embed(self.pretrain_grid, embed_dim) if ape else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.stages = _build_stages(dims, depths, num_heads, window_size, drop_path_rate, with_cp=with_cp,
                                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                                    attn_drop=attn_drop_rate, attn_impl=attn_impl)
        self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(dims[i]) for i in self.out_indices}) if out_norm else None
        self.apply(init_swin_weights)

        pretrained = local_checkpoint(pretrained, type(self).__name__)
        if pretrained:
            load_pretrained(self, pretrained, bias_resize=bias_resize)
        self.freeze()

    def freeze(self) -> None:
        super().freeze()
        if self.frozen_stages >= 0 and self.absolute_pos_embed is not None:
            self.absolute_pos_embed.requires_grad = False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, H/4, W/4, C)``: the patch embedding plus the absolute position
        embedding (resized to the grid) when the model has one."""
        x = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            grid = (x.shape[1], x.shape[2])
            pos = resize_abs_pos_embed(self.absolute_pos_embed, grid, self.pretrain_grid)
            x = x + pos.view(1, grid[0], grid[1], -1)
        return self.pos_drop(x)


def check_layout(depths: tuple[int, ...], num_heads: tuple[int, ...], out_indices: tuple[int, ...]) -> None:
    """Raise a ValueError naming the argument when the stage counts disagree or an out index names no stage."""
    if len(num_heads) != len(depths):
        raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
    if not out_indices or not all(0 <= i < len(depths) for i in out_indices):
        raise ValueError(f"out_indices {out_indices} must name stages 0..{len(depths) - 1}")


def _abs_pos_embed(grid: tuple[int, int], dim: int) -> nn.Parameter:
    """A learned absolute position embedding ``(1, grid_h * grid_w, dim)``, truncated-normal initialised."""
    embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
    trunc_normal_(embed, std=0.02)
    return embed


def _build_stages(dims: list[int], depths: tuple[int, ...], num_heads: tuple[int, ...], window_size: int,
                  drop_path_rate: float, with_cp: bool, mlp_ratio: float, qkv_bias: bool, drop: float,
                  attn_drop: float, attn_impl: str) -> nn.ModuleList:
    """One ``SwinStage`` per depth, stochastic depth rising linearly to ``drop_path_rate`` over all blocks, patch
    merging after every stage but the last."""
    rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
    stages = nn.ModuleList()
    for i, depth in enumerate(depths):
        first = sum(depths[:i])
        stages.append(SwinStage(
            dims[i], depth, num_heads[i], window_size, rates[first:first + depth], downsample=i < len(depths) - 1,
            with_cp=with_cp, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop,
            attn_impl=attn_impl,
        ))
    return stages


def init_swin_weights(module: nn.Module) -> None:
    """Official Swin (and Swin-Unet) initialisation: truncated normal(0.02) linears, unit LayerNorms; other
    layers keep PyTorch's defaults."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_backbone
def swin_t(pretrained: str | None = None, **kwargs) -> SwinTransformer:
    """Swin-T: embed 96, depths 2-2-6-2, heads 3-6-12-24."""
    return SwinTransformer(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), pretrained=pretrained,
                           **kwargs)


@register_backbone
def swin_s(pretrained: str | None = None, **kwargs) -> SwinTransformer:
    """Swin-S: embed 96, depths 2-2-18-2, heads 3-6-12-24."""
    return SwinTransformer(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), pretrained=pretrained,
                           **kwargs)


@register_backbone
def swin_b(pretrained: str | None = None, **kwargs) -> SwinTransformer:
    """Swin-B: embed 128, depths 2-2-18-2, heads 4-8-16-32."""
    return SwinTransformer(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), pretrained=pretrained,
                           **kwargs)


@register_backbone
def swin_l(pretrained: str | None = None, **kwargs) -> SwinTransformer:
    """Swin-L: embed 192, depths 2-2-18-2, heads 6-12-24-48."""
    return SwinTransformer(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), pretrained=pretrained,
                           **kwargs)
