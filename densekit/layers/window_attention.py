"""Window multi-head self-attention with a relative position bias (Swin), fast and reference paths.

The fast path runs ``F.scaled_dot_product_attention`` once per block with the relative bias and
the shifted-window mask folded into one additive mask of shape ``(nW*nH, N, N)``. The folded mask
is cached per (padded size, window, shift, dtype, device) whenever the bias table cannot change
under us (no autograd on it); during training only the cheap bias gather is redone each step.
The reference path is the official Swin's per-window matmul-softmax-matmul, kept for tests.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from .rel_pos_bias import crop_bias_table, relative_position_index

# Official Swin, timm, mmsegmentation and HF all use -100 (not -inf) for cross-region pairs;
# keeping the same constant keeps outputs equal to theirs to the last bit of softmax.
MASK_VALUE = -100.0
ATTN_IMPLS = ("sdpa", "reference")


def is_tracing() -> bool:
    """True while torch.export / torch.compile / jit trace records a graph (ONNX export goes through these):
    sizes may then be symbolic (unhashable, so no cache lookup) and a cached tensor would enter the graph as a
    constant of one input size."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _shift_region_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
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
    with _plain_tensors():
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
def _cached_index(window: int, device: torch.device) -> torch.Tensor:
    # Recomputable, so never a buffer in the state dict (DESIGN.md §3); built once per device.
    with _plain_tensors():
        return relative_position_index(window).to(device)


def _plain_tensors() -> contextlib.ExitStack:
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


class WindowAttention(nn.Module):
    """Self-attention inside non-overlapping ``window x window`` windows of a padded NHWC map.

    Args:
        dim: channels ``C``.
        num_heads: heads ``nH``; ``C`` must divide by it.
        window_size: window ``W`` the bias table is built for (``(2W-1)^2`` rows).
        qkv_bias: bias on the fused q, k, v projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
        attn_impl: ``'sdpa'`` (fast path) or ``'reference'`` (per-window matmuls, for tests).
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
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def relative_bias(self, window: int) -> torch.Tensor:
        """Bias ``(nH, N, N)`` for a ``window x window`` window, ``N = window^2``.

        A window smaller than the table's (a stage smaller than the window) reads the central
        offsets of the table.
        """
        table = self.relative_position_bias_table
        if window != self.window_size:
            table = crop_bias_table(table, window)
        n = window * window
        return table[_cached_index(window, table.device).view(-1)].view(n, n, -1).permute(2, 0, 1)

    def folded_mask(self, height: int, width: int, window: int, shift: int, dtype: torch.dtype) -> torch.Tensor:
        """Relative bias plus shift mask, ``(1, nW*nH, N, N)`` in ``dtype``, cached when safe.

        4-D on purpose: PyTorch's CPU flash-attention kernel takes 2-D or 4-D masks only; a 3-D mask sends
        every call to the slower math path (Swin-T 512x512 bf16 on CPU: 1.16x -> 1.03x of timm's time)."""
        table = self.relative_position_bias_table
        # Never while a graph is recorded: the key reads the table's data pointer, which traced tensors lack.
        cacheable = not (torch.is_grad_enabled() and table.requires_grad) and not is_tracing()
        if not cacheable:
            return self._fold(height, width, window, shift, dtype)
        key = (height, width, window, shift, dtype, table.device, table._version, table.data_ptr())
        if key not in self._mask_cache:
            if len(self._mask_cache) >= 8:  # many input sizes: keep memory bounded
                self._mask_cache.clear()
            with _plain_tensors():
                self._mask_cache[key] = self._fold(height, width, window, shift, dtype)
        return self._mask_cache[key]

    def _fold(self, height: int, width: int, window: int, shift: int, dtype: torch.dtype) -> torch.Tensor:
        bias = self.relative_bias(window).unsqueeze(0)  # (1, nH, N, N)
        if shift:
            bias = bias + _shift_region_mask(height, width, window, shift, bias.device)[:, None]
        else:
            bias = bias.expand((height // window) * (width // window), -1, -1, -1)
        return bias.reshape(1, -1, window * window, window * window).to(dtype)

    def forward(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """Attend within windows of an already padded and cyclically shifted map.

        Args:
            x: ``(B, Hp, Wp, C)``, ``Hp`` and ``Wp`` multiples of ``window``.
            window: window side used at this resolution (``<= window_size``).
            shift: the cyclic shift that was applied (0 for regular windows); selects the mask.

        Returns:
            ``(B, Hp, Wp, C)``.
        """
        if self.attn_impl == "reference":
            return self._forward_reference(x, window, shift)
        b, hp, wp, c = x.shape
        nh, head_dim, n = self.num_heads, c // self.num_heads, window * window
        # The projection is per token, so it runs before partitioning: one permute copy then
        # yields q, k, v already laid out as (B, nW*nH, N, d) for one SDPA call.
        qkv = self.qkv(x).view(b, hp // window, window, wp // window, window, 3, nh, head_dim)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, b, -1, n, head_dim)
        q, k, v = qkv.unbind(0)
        mask = self.folded_mask(hp, wp, window, shift, q.dtype)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        out = out.view(b, hp // window, wp // window, nh, window, window, head_dim)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)
        return self.proj_drop(self.proj(out))

    def attention_weights(self, x: torch.Tensor, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference attention weights ``softmax(q k^T / sqrt(d) + bias + shift mask)`` and the values.

        Args: as ``forward`` (``x`` ``(B, Hp, Wp, C)``, already padded and shifted).

        Returns:
            weights ``(B*nW, nH, N, N)`` (query rows sum to 1; windows in ``partition_windows`` order) and
            values ``(B*nW, nH, N, d)``. No dropout: ``densekit.attention_maps`` draws these.
        """
        b, hp, wp, _ = x.shape
        windows = partition_windows(x, window)  # (B*nW, N, C)
        bw, n, _ = windows.shape
        qkv = self.qkv(windows).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.relative_bias(window).unsqueeze(0)
        if shift:
            region = _shift_region_mask(hp, wp, window, shift, x.device).to(attn.dtype)
            attn = attn.view(b, -1, self.num_heads, n, n) + region[None, :, None]
            attn = attn.view(bw, self.num_heads, n, n)
        return attn.softmax(dim=-1), v

    def _forward_reference(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """The official Swin computation, window by window; same contract as ``forward``."""
        b, hp, wp, c = x.shape
        attn, v = self.attention_weights(x, window, shift)
        bw, n = attn.shape[0], attn.shape[-1]
        attn = F.dropout(attn, self.attn_drop, self.training)
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        out = self.proj_drop(self.proj(out))
        return reverse_windows(out, window, hp, wp)
