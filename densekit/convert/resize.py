"""Fitting one checkpoint tensor to the model's shape, where densekit knows how (DESIGN.md §5).

    relative_position_bias_table   ((2W1-1)^2, nH) -> ((2W2-1)^2, nH): bicubic (official Swin) or geometric (timm)
    absolute_pos_embed             (1, N1, C) -> (1, H*W, C): bicubic on the model's pretraining grid
    patch_embed.proj.weight        (C, 3, p, p) -> (C, in_chans, p, p): timm's adapt_input_conv
    pos_embed (ViT)                (1, P + N1, C) -> (1, P + H*W, C): the patch part bicubic on its grid, no antialias,
                                   the P class/register slots kept (MAE interpolate_pos_embed, mmseg resize_pos_embed)

Anything else of another shape does not fit: ``resize_tensor`` returns None and the caller decides.
"""
from __future__ import annotations

import math
import re

import torch
from timm.models import adapt_input_conv

from ..layers.rel_pos_bias import resize_abs_pos_embed, resize_bias_table, table_window
from .report import CheckpointError

BIAS_RESIZE = ("bicubic", "geometric")
# A Swin backbone's own keys, alone or under a whole model's ``backbone.``.
_POS_EMBED = re.compile(r"^(backbone\.)?absolute_pos_embed$")
_PATCH_KERNEL = re.compile(r"^(backbone\.)?(model\.)?patch_embed\.proj\.weight$")
# A densekit ViTBackbone's (timm's ViT under ``model.``), alone or under ``backbone.``.
_VIT_POS_EMBED = re.compile(r"^(backbone\.)?model\.pos_embed$")


def check_bias_resize(method: str) -> str:
    """``method`` if it is one of ``BIAS_RESIZE``; raises ``ValueError`` naming the choices otherwise."""
    if method not in BIAS_RESIZE:
        raise ValueError(f"bias_resize must be one of {BIAS_RESIZE}, got {method!r}")
    return method


def _bias_table(key: str, value: torch.Tensor, shape: tuple[int, ...], method: str) -> torch.Tensor | None:
    if value.dim() != 2 or len(shape) != 2 or value.shape[1] != shape[1]:
        return None  # a different number of heads is a different model
    try:
        table_window(value)
    except ValueError as error:
        raise CheckpointError(f"{key}: {error} (shape {tuple(value.shape)})") from error
    # isqrt(shape[0]) is odd for every (2W-1)^2 table, so +1 or +2 give the same W; other shapes fail the final check.
    return resize_bias_table(value, (math.isqrt(shape[0]) + 1) // 2, method)


def _pos_embed(key: str, value: torch.Tensor, shape: tuple[int, ...],
               grid: tuple[int, int] | None) -> torch.Tensor | None:
    grid = tuple(grid) if grid is not None else (math.isqrt(shape[1]),) * 2
    if value.dim() != 3 or len(shape) != 3 or value.shape[2] != shape[2] or grid[0] * grid[1] != shape[1]:
        return None
    try:
        return resize_abs_pos_embed(value, grid)
    except ValueError as error:
        raise CheckpointError(f"{key}: {error}") from error


def resize_vit_pos_embed(embed: torch.Tensor, grid: tuple[int, int], length: int) -> torch.Tensor:
    """A ViT position embedding ``(1, P + S*S, C)`` -> ``(1, length, C)`` for a ``grid = (H, W)`` patch grid.

    ``P = length - H*W`` leading slots (class token; none for timm's ``no_embed_class`` models) are kept as they
    are; the ``S x S`` patch part is resized bicubically (align_corners=False, no antialias), exactly MAE's
    ``interpolate_pos_embed`` and mmseg's ``resize_pos_embed``. timm's ``resample_abs_pos_embed`` antialiases
    when shrinking, so it is not used here.

    Raises:
        ValueError: the patch part of ``embed`` is not a square grid.
    """
    prefix = length - grid[0] * grid[1]
    if prefix < 0 or embed.shape[1] <= prefix:
        raise ValueError(f"pos_embed of {embed.shape[1]} positions does not fit a {grid} grid with {length} slots")
    patches = resize_abs_pos_embed(embed[:, prefix:], grid)  # raises on a non-square source grid
    return torch.cat([embed[:, :prefix], patches], dim=1)


def _vit_pos_embed(key: str, value: torch.Tensor, shape: tuple[int, ...],
                   grid: tuple[int, int] | None) -> torch.Tensor | None:
    if value.dim() != 3 or len(shape) != 3 or value.shape[2] != shape[2]:
        return None
    grid = tuple(grid) if grid is not None else (math.isqrt(shape[1]),) * 2
    try:
        return resize_vit_pos_embed(value, grid, shape[1])
    except ValueError as error:
        raise CheckpointError(f"{key}: {error}") from error


def resize_tensor(key: str, value: torch.Tensor, shape: tuple[int, ...], bias_resize: str = "bicubic",
                  pos_grid: tuple[int, int] | None = None) -> torch.Tensor | None:
    """``value`` fitted to the model's ``shape``, or None where densekit does not know how.

    Args:
        key: the model key (a Swin backbone's own, or under ``backbone.``; bias tables at any depth, so the
            Swin-Unet decoder's too).
        value: the checkpoint tensor.
        shape: the model tensor's shape.
        bias_resize: ``'bicubic'`` or ``'geometric'`` for bias tables (``BIAS_RESIZE``).
        pos_grid: the model's ``(H, W)`` patch grid for ``absolute_pos_embed`` or a ViT's ``pos_embed``
            (``pretrain_grid``); None: square.

    Returns:
        A tensor of exactly ``shape``, or None.

    Raises:
        CheckpointError: a bias table that is not a ``(2W-1)^2`` grid, or a position embedding that is not
            square; named with the key.
    """
    shape = tuple(shape)
    new = None
    if key.endswith("relative_position_bias_table"):
        new = _bias_table(key, value, shape, bias_resize)
    elif _POS_EMBED.match(key):
        new = _pos_embed(key, value, shape, pos_grid)
    elif _VIT_POS_EMBED.match(key):
        new = _vit_pos_embed(key, value, shape, pos_grid)
    elif _PATCH_KERNEL.match(key) and value.dim() == 4 and value.shape[0] == shape[0] and value.shape[2:] == shape[2:]:
        new = adapt_input_conv(shape[1], value)
    return new if new is not None and tuple(new.shape) == shape else None
