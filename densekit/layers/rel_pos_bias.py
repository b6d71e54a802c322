"""Relative position bias: the index that reads a bias table, and resizing tables between windows.

A Swin block owns a table of ``(2*Wh-1)*(2*Ww-1)`` rows x ``num_heads`` columns; row ``r`` is the
bias for one relative offset ``(dy, dx)`` between a query and a key in the same window. Window 7
gives 169 rows, window 12 gives 529.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def relative_position_index(window: int) -> torch.Tensor:
    """Index into a ``((2W-1)^2, nH)`` bias table for every (query, key) pair of a ``W x W`` window.

    Returns:
        ``(W*W, W*W)`` long tensor; row-major tokens, offsets ``(dy + W - 1) * (2W - 1) + (dx + W - 1)``,
        the same index as the official Swin, timm and mmsegmentation build.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def table_window(table: torch.Tensor) -> int:
    """Window size ``W`` of a square ``((2W-1)^2, nH)`` table; raises on a table that is not square."""
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        raise ValueError(f"bias table of {table.shape[0]} rows is not a (2W-1)^2 grid")
    return (side + 1) // 2


def resize_bias_table(table: torch.Tensor, window: int, method: str = "bicubic") -> torch.Tensor:
    """Resize a ``((2W1-1)^2, nH)`` bias table to window ``window``.

    Args:
        table: ``(L1, nH)`` source table.
        window: target window ``W2``; the result has ``(2*W2-1)^2`` rows.
        method: ``'bicubic'`` reproduces the official Swin ``load_pretrained`` exactly (view as
            ``(1, nH, S1, S1)``, ``F.interpolate(bicubic, align_corners=False)``); ``'geometric'`` uses
            timm's ``resize_rel_pos_bias_table`` (BEiT-style geometric-progression interpolation).

    Returns:
        ``((2*W2-1)^2, nH)`` table in the source dtype.
    """
    side = 2 * window - 1
    if table.shape[0] == side * side:
        return table
    table_window(table)  # validates the source shape
    if method == "bicubic":
        n_heads = table.shape[1]
        src = int(math.isqrt(table.shape[0]))
        grid = table.float().permute(1, 0).reshape(1, n_heads, src, src)
        out = F.interpolate(grid, size=(side, side), mode="bicubic")
        return out.reshape(n_heads, side * side).permute(1, 0).to(table.dtype)
    if method == "geometric":
        from timm.layers import resize_rel_pos_bias_table

        return resize_rel_pos_bias_table(table, (window, window), (side * side, table.shape[1]))
    raise ValueError(f"unknown bias-table resize method {method!r}; use 'bicubic' or 'geometric'")


def resize_abs_pos_embed(embed: torch.Tensor, grid: tuple[int, int],
                         src_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize an absolute position embedding ``(1, S1*S1, C)`` to ``(1, H*W, C)`` bicubically.

    Args:
        embed: ``(1, L, C)``; the source grid is square unless ``src_grid`` says otherwise.
        grid: target ``(H, W)`` patch grid.
    """
    _, length, channels = embed.shape
    if src_grid is None:
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"absolute_pos_embed of {length} positions is not a square grid; give src_grid")
        src_grid = (side, side)
    if tuple(src_grid) == tuple(grid):
        return embed
    x = embed.float().reshape(1, src_grid[0], src_grid[1], channels).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=grid, mode="bicubic")
    return x.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], channels).to(embed.dtype)


def crop_bias_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """Central ``(2w-1)^2`` rows of a ``(2W-1)^2`` table for a window ``w <= W``.

    Used when a stage is smaller than the window and the window shrinks (official and timm
    behaviour): the offsets a small window can see are a subset of the large window's offsets,
    so the learned biases for them are reused as they are rather than interpolated.
    """
    big = table_window(table)
    if window == big:
        return table
    side, small = 2 * big - 1, 2 * window - 1
    start = big - window
    grid = table.reshape(side, side, -1)[start:start + small, start:start + small]
    return grid.reshape(small * small, -1)
