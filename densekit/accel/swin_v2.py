"""CPU fast paths of densekit's Swin V2 backbone: its cosine-attention blocks and V2 patch merging.

As ``accel/swin.py`` does for V1 (whose tiling and fused linears these reuse), each class is the accelerated
subclass of one network module, taking its fast path in CPU inference only (``fused_linear.cpu_inference``) and the
network's own forward everywhere else.

- ``FastCosineWindowAttention``: the folded mask (``16 * sigmoid(cpb_mlp(coords))`` read for every pair, plus
  the shift mask) cached while the position-bias MLP is unchanged: the network recomputes the MLP over the
  ``(2W-1)^2`` coordinates, the gather and the sigmoid in every block of every forward, since its weights may be
  training. And ``residual_tiled``: the block's attention half, ``x + norm1(proj(attention(x)))`` (res-post-norm),
  over tiles of whole windows, every intermediate one tile big.
- ``FastSwinV2Block``: ``residual_tiled``, then ``x + norm2(mlp(x))`` in row chunks with the fused kernels.
- ``FastPatchMergingV2``: the ``4C -> 2C`` reduction through the fused linear, then the norm.

tests/accel/test_swin_v2_accel.py holds each against the network's own path.
"""
from __future__ import annotations

import weakref
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.swin_v2 import PatchMergingV2, SwinV2Block
from ..layers.cosine_attention import CosineWindowAttention
from ..layers.window_attention import window_order
from . import register
from .fused_linear import chunk_rows, cpu_inference, linear
from .swin import cached_folded_mask

# Folded masks per attention module, weakly keyed by it (optimize adds no state, restore leaves none); bounded per
# module by accel.swin.cached_folded_mask.
_FOLDED: weakref.WeakKeyDictionary[CosineWindowAttention, dict] = weakref.WeakKeyDictionary()


def clear_folded_masks() -> None:
    """Drop every cached V2 folded mask; the next call folds from the position-bias MLP's current weights."""
    _FOLDED.clear()


@register
class FastCosineWindowAttention(CosineWindowAttention):
    """``CosineWindowAttention`` with a folded-mask cache and ``residual_tiled``."""

    def folded_mask(self, height: int, width: int, window: int, shift: int, batch: int,
                    dtype: torch.dtype) -> torch.Tensor:
        """``CosineWindowAttention.folded_mask``, cached (``accel.swin.cached_folded_mask``) while the position-bias
        MLP's weights are unchanged."""
        compute = partial(super().folded_mask, height, width, window, shift, batch, dtype)
        return cached_folded_mask(_FOLDED, self, tuple(self.cpb_mlp.parameters()), compute,
                                  (height, width, window, shift, batch if shift else 1, dtype))

    def residual_tiled(self, x: torch.Tensor, norm: nn.Module, window: int, shift: int) -> torch.Tensor:
        """``x + norm(proj(attention(x)))`` for CPU inference, computed tile by tile.

        A tile is a run of whole windows, ``chunk_rows(3C)`` rows at most: its rows are gathered straight from
        ``x`` (padding rows zeroed, as the network pads ``x`` with zeros), projected, attended, projected back,
        normalised, added to themselves and copied to their token rows of the output, which has one spare row that
        takes the padding rows.

        Args:
            x: ``(B, H, W, C)`` block input.
            norm: the block's post-attention LayerNorm (``norm1``).
            window, shift: as in ``forward``.

        Returns:
            ``(B, H, W, C)``, a fresh tensor. ``SwinV2Block.forward`` is the reference.
        """
        b, h, w, c = x.shape
        order = window_order(h, w, window, shift, b, x.device)
        rows = x.reshape(-1, c)
        out = x.new_empty(b * h * w + 1, c)
        mask = self.folded_mask(-(-h // window) * window, -(-w // window) * window, window, shift, b, x.dtype)
        n = window * window
        step = n * max(1, chunk_rows(3 * c) // n)
        for i in range(0, order.gather.numel(), step):
            raw = F.embedding(order.gather[i:i + step], rows)
            if order.is_pad is not None:
                raw.masked_fill_(order.is_pad[i:i + step, None], 0.0)
            tile_mask = mask[i // n:i // n + raw.shape[0] // n] if mask.shape[0] > 1 else mask
            attended = self._attend_tile(raw, tile_mask)
            out.index_copy_(0, order.dest[i:i + step], raw.add_(norm(linear(attended, self.proj))))
        return out[:-1].view(b, h, w, c)

    def _attend_tile(self, raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosine attention of ``nw`` whole windows: ``(nw*N, C)`` rows -> ``(nw*N, C)`` token-major output.
        ``mask``: their folded mask, ``(1 or nw, nH, N, N)``."""
        n, c = mask.shape[-1], raw.shape[-1]
        qkv = linear(raw, self.qkv)
        if self.q_bias is not None:
            qkv[:, :c] += self.q_bias
            qkv[:, 2 * c:] += self.v_bias
        qkv = qkv.view(-1, n, 3, self.num_heads, c // self.num_heads)
        # q and k normalised in one call; the logit scale folds into q, SDPA then runs with scale 1 (as ``attend``).
        qk = F.normalize(qkv[:, :, :2], dim=-1)
        q = (qk[:, :, 0] * self.scale().view(self.num_heads, 1).to(qk.dtype)).transpose(1, 2)
        k, v = qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        return out.transpose(1, 2).reshape(-1, c)


@register
class FastSwinV2Block(SwinV2Block):
    """``SwinV2Block`` whose CPU inference runs the attention over tiles of windows and the MLP in row chunks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        if (self.training or self.attn.attn_impl != "sdpa" or not isinstance(self.attn, FastCosineWindowAttention)
                or not cpu_inference(x)):
            return super().forward(x)
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        x = self.attn.residual_tiled(x, self.norm1, window, shift)
        rows = x.view(-1, x.shape[-1])
        step = chunk_rows(self.mlp.fc1.out_features)
        for i in range(0, rows.shape[0], step):  # x += norm2(mlp(x)), the 4C-wide hidden rows one chunk at a time
            chunk = rows[i:i + step]
            chunk += self.norm2(linear(linear(chunk, self.mlp.fc1, "gelu"), self.mlp.fc2))
        return x


@register
class FastPatchMergingV2(PatchMergingV2):
    """``PatchMergingV2`` with the ``4C -> 2C`` reduction through the fused linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        return self.norm(linear(self.neighbours(x), self.reduction))
