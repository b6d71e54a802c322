"""Swin V2 window attention: scaled cosine attention with a log-spaced continuous position bias.

``softmax(cos(q, k) * exp(min(logit_scale, log 100)) + 16 * sigmoid(cpb_mlp(table)) + shift mask) v`` inside
(shifted) windows of an NHWC map (Liu et al. 2022, official ``swin_transformer_v2.py``). The bias comes from a
small MLP over log-spaced relative coordinates, normalised by the window the weights were trained at
(``pretrained_window_size``), so a checkpoint runs at another window with no table to interpolate.

Padding, the cyclic shift, the window order and the shift mask are ``window_attention``'s: the SDPA path
gathers tokens straight into padded, shifted window order (``window_order``), the reference path pads, rolls
and partitions as the official code does.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import is_tracing
from .window_attention import (
    ATTN_IMPLS,
    cached_relative_index,
    pad_and_shift,
    partition_windows,
    plain_tensors,
    reverse_windows,
    shift_region_mask,
    unshift_and_crop,
    window_order,
)

# The official clamp: logit scales above log(1 / 0.01) = log 100 are cut.
MAX_LOGIT_SCALE = math.log(100.0)
CPB_HIDDEN = 512


def log_spaced_coords(window: int, pretrained_window: int = 0) -> torch.Tensor:
    """Relative coordinates ``((2W-1)^2, 2)`` of a ``W x W`` window, log-spaced as Swin V2 does.

    Offsets ``(dy, dx)`` in ``[-(W-1), W-1]`` (row-major over dy, then dx: the rows ``relative_position_index``
    reads) are divided by ``pretrained_window - 1`` (``window - 1`` when ``pretrained_window`` is 0), times 8,
    then ``sign(x) * log2(|x| + 1) / log2(8)``.
    """
    span = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1).reshape(-1, 2)
    # A 1x1 window has only the zero offset; guard its 0/0.
    norm = max((pretrained_window if pretrained_window > 0 else window) - 1, 1)
    table = table / norm * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


@lru_cache(maxsize=64)
def _cached_coords(window: int, pretrained_window: int, device: torch.device) -> torch.Tensor:
    # Recomputable, so never a buffer in the state dict (DESIGN.md §3).
    with plain_tensors():
        return log_spaced_coords(window, pretrained_window).to(device)


class CosineWindowAttention(nn.Module):
    """Swin V2 self-attention inside non-overlapping windows of an NHWC map.

    State dict (the official and timm names): ``qkv.weight`` (no bias), ``q_bias``, ``v_bias`` (no k bias),
    ``logit_scale`` ``(nH, 1, 1)``, ``cpb_mlp.{0,2}`` (Linear(2, 512), ReLU, Linear(512, nH, no bias)), ``proj``.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nH``.
        window_size: the window side this block uses on large maps.
        pretrained_window_size: window the weights were trained at; the relative coordinates are normalised by
            it (0: by the window in use).
        qkv_bias: ``q_bias`` and ``v_bias`` parameters.
        attn_drop, proj_drop: dropout on attention weights and after the output projection.
        attn_impl: ``'sdpa'`` (one SDPA call per block, the scale folded into q) or ``'reference'``
            (per-window matmuls, the official arithmetic).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, pretrained_window_size: int = 0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attn_impl: str = "sdpa") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.num_heads, self.window_size = num_heads, window_size
        self.pretrained_window_size = pretrained_window_size
        self.attn_impl, self.attn_drop = attn_impl, attn_drop
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN), nn.ReLU(inplace=True),
                                     nn.Linear(CPB_HIDDEN, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def project_qkv(self, rows: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` -> ``(..., 3C)``: the q, k, v projection, k without a bias."""
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        return F.linear(rows, self.qkv.weight, bias)

    def scale(self) -> torch.Tensor:
        """Per-head logit scale ``(nH, 1, 1)``, clamped at log 100 then exponentiated."""
        return torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp()

    def relative_bias(self, window: int) -> torch.Tensor:
        """``16 * sigmoid(cpb_mlp(coords))`` read for every (query, key) pair: ``(nH, N, N)``, ``N = window^2``."""
        device = self.logit_scale.device
        coords = log_spaced_coords(window, self.pretrained_window_size).to(device) if is_tracing() \
            else _cached_coords(window, self.pretrained_window_size, device)
        table = self.cpb_mlp(coords.to(self.qkv.weight.dtype))  # ((2W-1)^2, nH)
        n = window * window
        index = cached_relative_index(window, device).view(-1)
        return 16 * torch.sigmoid(table[index].view(n, n, -1).permute(2, 0, 1))

    def folded_mask(self, height: int, width: int, window: int, shift: int, batch: int,
                    dtype: torch.dtype) -> torch.Tensor:
        """Position bias plus shift mask: ``(1, nH, N, N)`` for regular windows, ``(batch*nW, nH, N, N)`` for
        shifted ones on a ``height x width`` padded grid (as ``WindowAttention.folded_mask``)."""
        bias = self.relative_bias(window).unsqueeze(0)
        if shift:
            bias = bias + shift_region_mask(height, width, window, shift, bias.device)[:, None]
            bias = bias.repeat(batch, 1, 1, 1)
        return bias.to(dtype)

    def forward(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """``(B, H, W, C)`` (any H, W; padded inside) -> ``(B, H, W, C)``, attending within (shifted) windows."""
        if self.attn_impl == "reference" or is_tracing():
            return self._forward_reference(x, window, shift)
        return self.proj_drop(self.proj(self.attend(x, window, shift)))

    def attend(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """SDPA path before the output projection: ``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        order = window_order(h, w, window, shift, b, x.device)
        windows = F.embedding(order.gather, x.reshape(-1, c))  # (B*nW*N, C): padded, shifted, window order
        if order.pads is not None:
            windows.index_fill_(0, order.pads, 0.0)
        n = window * window
        qkv = self.project_qkv(windows).view(-1, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (nw, nH, N, d)
        # cos(q, k) * scale = (scale * q / |q|) . (k / |k|): the scale folds into q, SDPA runs with scale 1.
        q = F.normalize(q, dim=-1) * self.scale().to(q.dtype)
        k = F.normalize(k, dim=-1)
        mask = self.folded_mask(-(-h // window) * window, -(-w // window) * window, window, shift, b, q.dtype)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=1.0)
        return F.embedding(order.scatter, out.transpose(1, 2).reshape(-1, c)).view(b, h, w, c)

    def attention_weights(self, x: torch.Tensor, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference weights and values of a padded, shifted ``(B, Hp, Wp, C)`` map:
        ``(B*nW, nH, N, N)`` (rows sum to 1) and ``(B*nW, nH, N, d)``."""
        b, hp, wp, _ = x.shape
        windows = partition_windows(x, window)
        bw, n, _ = windows.shape
        q, k, v = self.project_qkv(windows).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * self.scale() + self.relative_bias(window).unsqueeze(0)
        if shift:
            region = shift_region_mask(hp, wp, window, shift, x.device).to(attn.dtype)
            attn = (attn.view(b, -1, self.num_heads, n, n) + region[None, :, None]).view(bw, self.num_heads, n, n)
        return attn.softmax(dim=-1), v

    def _forward_reference(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        _, h, w, c = x.shape
        y = pad_and_shift(x, window, shift)
        hp, wp = y.shape[1], y.shape[2]
        attn, v = self.attention_weights(y, window, shift)
        attn = F.dropout(attn, self.attn_drop, self.training)
        out = (attn @ v).transpose(1, 2).reshape(attn.shape[0], attn.shape[-1], c)
        out = self.proj_drop(self.proj(out))
        return unshift_and_crop(reverse_windows(out, window, hp, wp), shift, h, w)
