"""Window multi-head self-attention with a relative position bias (Swin): the SDPA path and the reference path.

Both paths take a block's normalised, unpadded ``(B, H, W, C)`` map and return ``(B, H, W, C)``; padding to
window multiples (zeros after the norm, as official Swin, mmsegmentation and HF do) and the cyclic shift
happen inside.

SDPA path (``'sdpa'``, any device): one row gather (``F.embedding`` with a cached index) takes the tokens
straight into the padded, shifted, window-partitioned order, so padding, ``torch.roll`` and the partition
permute are one copy instead of three; q, k and v are strided views of the qkv projection (PyTorch's flash
kernels read them in place and write their output token-major, so no head permute either); one
``F.scaled_dot_product_attention`` call per block uses the relative bias and the shift mask folded into one
additive mask; a second gather undoes the order and drops the padded tokens, so the output projection runs on
real tokens only. What depends on the geometry alone (the gather index, the shift mask, the bias index) is
cached per size and device; the bias gather is redone at each call. The CPU inference fast path built on
these steps (tiles of windows, oneDNN fused projections, a folded-mask cache) is ``densekit.accel.swin``.

Reference path (``'reference'``, and whenever a graph is traced or compiled): the official Swin's pad, roll,
partition and per-window matmul-softmax-matmul, kept for tests and export.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from .rel_pos_bias import crop_bias_table, relative_position_index
from .tracing import is_tracing

# Official Swin, timm, mmsegmentation and HF all use -100 (not -inf) for cross-region pairs;
# keeping the same constant keeps outputs equal to theirs to the last bit of softmax.
MASK_VALUE = -100.0
ATTN_IMPLS = ("sdpa", "reference")
# Padded tokens cost qkv matmul work (~P * 3C^2) if projected after the gather, a 3x wider gather (~3C per row
# instead of C) if projected before. Measured on CPU (Swin-T 512x512) the first wins once the padded share of the
# rows times C exceeds about 32: stages 3 and 4 (C = 384, 768) but not 1 and 2.
PROJECT_FIRST = 32


def shift_region_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """0/-100 mask ``(nW, N, N)`` for shifted windows on a padded ``height x width`` grid.

    Tokens that a cyclic shift brought together from different regions of the grid must not
    attend to each other; regions are labelled on the padded grid, as official Swin and mmseg do.
    """
    if is_tracing():
        return _build_shift_region_mask(height, width, window, shift, device)
    return _cached_shift_region_mask(height, width, window, shift, device)


@lru_cache(maxsize=64)
def _cached_shift_region_mask(height: int, width: int, window: int, shift: int,
                              device: torch.device) -> torch.Tensor:
    with plain_tensors():
        return _build_shift_region_mask(height, width, window, shift, device)


def _build_shift_region_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    regions = torch.zeros(height, width, device=device)
    bounds = ((0, -window), (-window, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            regions[h0:h1, w0:w1] = label
            label += 1
    windows = regions.view(height // window, window, width // window, window).permute(0, 2, 1, 3)
    windows = windows.reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, MASK_VALUE, 0.0)


@lru_cache(maxsize=32)
def cached_relative_index(window: int, device: torch.device) -> torch.Tensor:
    # Recomputable, so never a buffer in the state dict (DESIGN.md §3); built once per device.
    with plain_tensors():
        return relative_position_index(window).to(device)


def plain_tensors() -> contextlib.ExitStack:
    """Context for tensors that are cached across calls: built under ``torch.inference_mode()`` they
    would be inference tensors, which a later training step cannot save for backward."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode(False))
    stack.enter_context(torch.no_grad())
    return stack


def partition_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B*nW, window*window, C)`` with H, W multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def reverse_windows(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """``(B*nW, window*window, C)`` -> ``(B, H, W, C)``; the inverse of ``partition_windows``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def pad_and_shift(x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, Hp, Wp, C)``: zero-pad to window multiples, then roll by ``-shift``
    (official Swin's order: the shift mask's regions are laid out on the padded grid)."""
    _, h, w, _ = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    # Pad unconditionally while a graph is recorded (ONNX export): a test on symbolic sizes would bake this
    # input size's branch into the graph.
    if is_tracing() or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    return x


def unshift_and_crop(x: torch.Tensor, shift: int, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pad_and_shift``: ``(B, Hp, Wp, C)`` -> ``(B, height, width, C)``."""
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    if is_tracing() or x.shape[1] != height or x.shape[2] != width:
        x = x[:, :height, :width]
    return x


class WindowOrder(NamedTuple):
    """Row indices between a flattened ``(B*H*W, C)`` map and its padded, shifted, window-partitioned order
    ``(B*nW*N, C)`` (``partition_windows(pad_and_shift(x))`` flattened).

    gather: ``(B*Hp*Wp,)`` source row of every window-order row (padded rows point at row 0 and are
        zeroed afterwards).
    pads: ``(P,)`` window-order rows that are padding, or None when the map needs no padding.
    scatter: ``(B*H*W,)`` window-order row of every token, so gathering with it inverts the order.
    is_pad: ``(B*Hp*Wp,)`` bool, True on padding rows, or None when the map needs no padding.
    dest: ``(B*Hp*Wp,)`` token row of every window-order row, ``B*H*W`` (one row past the map) for padding
        rows, so copying to it inverts the order into a map with one spare row.
    """

    gather: torch.Tensor
    pads: torch.Tensor | None
    scatter: torch.Tensor
    is_pad: torch.Tensor | None
    dest: torch.Tensor


@lru_cache(maxsize=128)
def window_order(height: int, width: int, window: int, shift: int, batch: int, device: torch.device) -> WindowOrder:
    """The ``WindowOrder`` of a ``batch x height x width`` map, built once per geometry and device."""
    with plain_tensors():
        hp, wp = -(-height // window) * window, -(-width // window) * window
        rows = (torch.arange(hp) + shift) % hp  # rolled row r holds padded row (r + shift) % Hp
        cols = (torch.arange(wp) + shift) % wp
        source = rows[:, None] * width + cols[None, :]
        is_pad = (rows[:, None] >= height) | (cols[None, :] >= width)
        source = partition_windows(torch.where(is_pad, 0, source)[None, ..., None], window).reshape(-1)
        is_pad = partition_windows(is_pad[None, ..., None], window).reshape(-1)
        position = torch.empty(height * width, dtype=torch.long)
        position[source[~is_pad]] = torch.arange(hp * wp)[~is_pad]
        image = torch.arange(batch)[:, None]
        gather = (source[None] + image * (height * width)).reshape(-1)
        is_pad = is_pad.repeat(batch)
        pads = is_pad.nonzero().squeeze(1) if is_pad.any() else None
        scatter = (position[None] + image * (hp * wp)).reshape(-1)
        dest = torch.where(is_pad, batch * height * width, gather)
        return WindowOrder(gather.to(device), None if pads is None else pads.to(device), scatter.to(device),
                           None if pads is None else is_pad.to(device), dest.to(device))


class WindowAttention(nn.Module):
    """Self-attention inside non-overlapping ``window x window`` windows of an NHWC map.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nH``; ``C`` must divide by it.
        window_size: window ``W`` the bias table is built for (``(2W-1)^2`` rows).
        qkv_bias: bias on the fused q, k, v projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
        attn_impl: ``'sdpa'`` (one SDPA call per block) or ``'reference'`` (per-window matmuls, official Swin).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.attn_impl = attn_impl
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_bias(self, window: int) -> torch.Tensor:
        """Bias ``(nH, N, N)`` for a ``window x window`` window, ``N = window^2``.

        A window smaller than the table's (a stage smaller than the window) reads the central
        offsets of the table.
        """
        table = self.relative_position_bias_table
        if window != self.window_size:
            table = crop_bias_table(table, window)
        n = window * window
        return table[cached_relative_index(window, table.device).view(-1)].view(n, n, -1).permute(2, 0, 1)

    def folded_mask(self, height: int, width: int, window: int, shift: int, batch: int,
                    dtype: torch.dtype) -> torch.Tensor:
        """Relative bias plus shift mask in ``dtype``: ``(1, nH, N, N)`` for regular windows (the same for every
        window), ``(batch*nW, nH, N, N)`` for shifted ones (windows in ``partition_windows`` order over a
        ``height x width`` padded grid, repeated per image). Built from the bias table at each call, so it
        follows every update of the table and carries its gradient.

        4-D on purpose: PyTorch's CPU flash-attention kernel broadcasts 4-D masks over size-1 dims but sends a
        3-D mask to the slower math path."""
        bias = self.relative_bias(window).unsqueeze(0)  # (1, nH, N, N)
        if shift:
            bias = bias + shift_region_mask(height, width, window, shift, bias.device)[:, None]
            bias = bias.repeat(batch, 1, 1, 1)
        return bias.to(dtype)

    def forward(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """Attend within (shifted) windows of a normalised map.

        Args:
            x: ``(B, H, W, C)``, any ``H``, ``W``; padded to window multiples inside.
            window: window side used at this resolution (``<= window_size``).
            shift: cyclic shift of the windows (0 for regular windows).

        Returns:
            ``(B, H, W, C)``.
        """
        if self.attn_impl == "reference" or is_tracing():
            return self._forward_reference(x, window, shift)
        return self.proj_drop(self.proj(self.attend(x, window, shift)))

    def project_qkv(self, rows: torch.Tensor) -> torch.Tensor:
        """The q, k, v projection of ``(..., C)`` rows -> ``(..., 3C)``."""
        return self.qkv(rows)

    def attend(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """The SDPA path's attention output before the output projection (``forward`` minus ``proj``);
        ``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        order = window_order(h, w, window, shift, b, x.device)
        pads = order.pads
        if self._project_first(order, c):
            # Much padding on a wide stage: project only the real tokens and gather the 3C-wide rows; a padded
            # (zero) token projects to the qkv bias, which is what its rows get.
            qkv = F.embedding(order.gather, self.project_qkv(x.reshape(-1, c)))
            bias = self.qkv.bias
            if bias is None:
                qkv.index_fill_(0, pads, 0.0)
            else:
                qkv.index_copy_(0, pads, bias.to(qkv.dtype).expand(pads.numel(), -1))
        else:
            windows = F.embedding(order.gather, x.reshape(-1, c))  # (B*nW*N, C), one copy
            if pads is not None:
                windows.index_fill_(0, pads, 0.0)  # a fresh tensor: in place, no copy
            qkv = self.project_qkv(windows)
        out = self._attend_windows(qkv, self._mask_of(h, w, window, shift, b), 0)
        return F.embedding(order.scatter, out).view(b, h, w, c)

    def _project_first(self, order: WindowOrder, channels: int) -> bool:
        return order.pads is not None and order.pads.numel() * channels > PROJECT_FIRST * order.gather.numel()

    def _mask_of(self, height: int, width: int, window: int, shift: int, batch: int
                 ) -> Callable[[torch.dtype], torch.Tensor]:
        """``folded_mask`` of an unpadded ``height x width`` map, waiting for its dtype."""
        return partial(self.folded_mask, -(-height // window) * window, -(-width // window) * window, window, shift,
                       batch)

    def _attend_windows(self, qkv: torch.Tensor, fold: Callable[[torch.dtype], torch.Tensor],
                        first: int) -> torch.Tensor:
        """Attention of ``nw`` consecutive whole windows, from window ``first`` on.

        Args:
            qkv: ``(nw*N, 3C)`` their projected rows.
            fold: ``folded_mask`` of the whole map, given the dtype: ``(1 or B*nW, nH, N, N)``.
            first: index of the first window among the map's ``B*nW``.

        Returns:
            ``(nw*N, C)`` attention output, token-major.
        """
        mask = fold(qkv.dtype)
        n, c = mask.shape[-1], qkv.shape[-1] // 3
        qkv = qkv.view(-1, n, 3, self.num_heads, c // self.num_heads)
        if mask.shape[0] > 1:
            mask = mask[first:first + qkv.shape[0]]
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (nw, nH, N, d) views
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return out.transpose(1, 2).reshape(-1, c)  # token-major already: a view, no copy

    def attention_weights(self, x: torch.Tensor, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference attention weights ``softmax(q k^T / sqrt(d) + bias + shift mask)`` and the values.

        Args:
            x: ``(B, Hp, Wp, C)``, already padded and shifted (``pad_and_shift``).
            window, shift: as in ``forward``.

        Returns:
            weights ``(B*nW, nH, N, N)`` (query rows sum to 1; windows in ``partition_windows`` order) and
            values ``(B*nW, nH, N, d)``. No dropout: ``densekit.inference.attention_maps`` draws these.
        """
        b, hp, wp, _ = x.shape
        windows = partition_windows(x, window)  # (B*nW, N, C)
        bw, n, _ = windows.shape
        qkv = self.qkv(windows).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.relative_bias(window).unsqueeze(0)
        if shift:
            region = shift_region_mask(hp, wp, window, shift, x.device).to(attn.dtype)
            attn = attn.view(b, -1, self.num_heads, n, n) + region[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        return attn.softmax(dim=-1), v

    def _forward_reference(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """The official Swin computation, window by window; same contract as ``forward``."""
        _, h, w, c = x.shape
        y = pad_and_shift(x, window, shift)
        hp, wp = y.shape[1], y.shape[2]
        attn, v = self.attention_weights(y, window, shift)
        bw, n = attn.shape[0], attn.shape[-1]
        attn = F.dropout(attn, self.attn_drop, self.training)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        out = self.proj_drop(self.proj(out))
        return unshift_and_crop(reverse_windows(out, window, hp, wp), shift, h, w)
