"""CPU fast paths of densekit's Swin family: the backbone's blocks, patch layers and the Swin-Unet decoder.

Each class below is the accelerated subclass of one network module (``densekit.accel.optimize`` switches a built
model's modules to them) and takes its fast path in CPU inference only (``fused_linear.cpu_inference``: CPU
tensors, no autograd recording, float32 or bfloat16, no graph traced); everywhere else it runs the network's own
forward. The unfolded patch embedding is the one fast path that also trains: it is the same convolution as one
GEMM, with the same gradients.

- ``FastWindowAttention``: the q, k, v projection through oneDNN's fused linear, the folded mask (relative bias
  plus shift mask) cached while the bias table is unchanged, and ``residual_tiled``: the block's attention half
  over tiles of whole windows.
- ``FastSwinBlock``: ``residual_tiled``, then the MLP in row chunks with fused kernels, added in place.
- ``FastPatchEmbed``: the patch convolution as one GEMM of the unfolded patches, on the CPU.
- ``FastPatchMerging``, ``FastPatchExpand``, ``FastFinalPatchExpand``, ``FastSwinUpStage``: their projections
  through the fused linear.
- ``FastSwinUnetDecoder``: the final expansion, its norm and the classifier over chunks of tokens.

tests/accel/test_swin_accel.py holds each against the network's own path.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.swin import SwinBlock
from ..heads.swin_unet_decoder import SwinUnetDecoder, SwinUpStage
from ..layers.patch import FinalPatchExpand, PatchEmbed, PatchExpand, PatchMerging, tokens_to_pixels
from ..layers.tracing import is_tracing
from ..layers.window_attention import WindowAttention, plain_tensors, window_order
from . import register
from .fused_linear import chunk_rows, cpu_inference, linear

# Folded masks per attention module, kept off the module (weakly keyed by it) so that optimize adds no state and
# restore leaves none behind. At most MAX_FOLDED masks per module: many input sizes keep memory bounded.
_FOLDED: weakref.WeakKeyDictionary[WindowAttention, dict] = weakref.WeakKeyDictionary()
MAX_FOLDED = 8


def clear_folded_masks() -> None:
    """Drop every cached folded mask; the next call folds from the bias tables' current values."""
    _FOLDED.clear()


def cached_folded_mask(store: weakref.WeakKeyDictionary, module: nn.Module, params: tuple[torch.Tensor, ...],
                       compute: Callable[[], torch.Tensor], size_key: tuple) -> torch.Tensor:
    """``compute()`` (a module's folded mask), cached in ``store[module]`` under ``size_key`` (padded size, window,
    shift, batch, dtype) while the tensors it is folded from (``params``) cannot change under us: no autograd on
    them, their versions and storage as when cached. Never while a graph is recorded (the key reads data
    pointers, which traced tensors lack), nor for tensors made under ``torch.inference_mode()`` (no version
    counters to notice updates by). At most ``MAX_FOLDED`` masks per module."""
    if ((torch.is_grad_enabled() and any(p.requires_grad for p in params)) or is_tracing()
            or any(p.is_inference() for p in params)):
        return compute()
    key = (*size_key, params[0].device, tuple((p._version, p.data_ptr()) for p in params))
    cache = store.setdefault(module, {})
    if key not in cache:
        if len(cache) >= MAX_FOLDED:
            cache.clear()
        with plain_tensors():
            cache[key] = compute()
    return cache[key]


@register
class FastWindowAttention(WindowAttention):
    """``WindowAttention`` with oneDNN's fused q, k, v projection, a folded-mask cache and ``residual_tiled``."""

    def project_qkv(self, rows: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` -> ``(..., 3C)`` through ``fused_linear.linear`` (the plain op outside CPU inference)."""
        return linear(rows, self.qkv)

    def folded_mask(self, height: int, width: int, window: int, shift: int, batch: int,
                    dtype: torch.dtype) -> torch.Tensor:
        """``WindowAttention.folded_mask``, cached (``cached_folded_mask``) while the bias table is unchanged."""
        compute = partial(super().folded_mask, height, width, window, shift, batch, dtype)
        return cached_folded_mask(_FOLDED, self, (self.relative_position_bias_table,), compute,
                                  (height, width, window, shift, batch if shift else 1, dtype))

    def residual_tiled(self, x: torch.Tensor, norm: nn.Module, window: int, shift: int) -> torch.Tensor:
        """``x + proj(attention(norm(x)))`` for CPU inference, computed tile by tile.

        A tile is a run of whole windows, ``chunk_rows(3C)`` rows at most: its raw rows are gathered straight
        from ``x``, normalised, projected, attended, projected back with the residual added, and copied to
        their token rows of the output; every intermediate is one tile big and stays in cache (at Swin-T's
        stride-4 stage the whole-map version writes ~50 MB of intermediates per block, page-faulted afresh).
        The output has one spare row that takes the padding rows. Maps whose padding is better projected
        first (see ``WindowAttention.attend``) take ``attend`` whole instead.

        Args:
            x: ``(B, H, W, C)`` block input (not normalised).
            norm: the block's pre-attention LayerNorm.
            window, shift: as in ``forward``.

        Returns:
            ``(B, H, W, C)``, a fresh tensor. ``SwinBlock.forward`` is the reference.
        """
        b, h, w, c = x.shape
        order = window_order(h, w, window, shift, b, x.device)
        if self._project_first(order, c):
            return linear(self.attend(norm(x), window, shift), self.proj, residual=x)
        rows = x.reshape(-1, c)
        out = x.new_empty(b * h * w + 1, c)
        fold = self._mask_of(h, w, window, shift, b)
        n = window * window
        step = n * max(1, chunk_rows(3 * c) // n)
        for i in range(0, order.gather.numel(), step):
            raw = F.embedding(order.gather[i:i + step], rows)
            normed = norm(raw)
            if order.is_pad is not None:
                normed.masked_fill_(order.is_pad[i:i + step, None], 0.0)  # zeros after the norm, as in attend
            attended = self._attend_windows(linear(normed, self.qkv), fold, i // n)
            out.index_copy_(0, order.dest[i:i + step], linear(attended, self.proj, residual=raw))
        return out[:-1].view(b, h, w, c)


@register
class FastSwinBlock(SwinBlock):
    """``SwinBlock`` whose CPU inference runs the attention over tiles of windows and the MLP in row chunks, the
    biases, the GELU and both residual adds inside the fused linear kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        if (self.training or self.attn.attn_impl != "sdpa" or not isinstance(self.attn, FastWindowAttention)
                or not cpu_inference(x)):
            return super().forward(x)
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        return self._mlp_inference_(self.attn.residual_tiled(x, self.norm1, window, shift))

    def _mlp_inference_(self, x: torch.Tensor) -> torch.Tensor:
        """``x += mlp(norm2(x))`` in place, for CPU inference: ``(B, H, W, C)`` -> ``x``, fused kernels, in row
        chunks whose 4C-wide hidden rows stay in cache (``fused_linear.chunk_rows``). ``x`` must be the
        block's own tensor (``residual_tiled`` returns a fresh one)."""
        rows = x.view(-1, x.shape[-1])
        step = chunk_rows(self.mlp.fc1.out_features)
        for i in range(0, rows.shape[0], step):
            chunk = rows[i:i + step]
            chunk += linear(linear(self.norm2(chunk), self.mlp.fc1, "gelu"), self.mlp.fc2)
        return x


@register
class FastPatchEmbed(PatchEmbed):
    """``PatchEmbed`` whose projection on the CPU is what the convolution is, a matrix product of the unfolded
    patches with the flattened kernel: one copy of the (3-channel) input and one GEMM that writes the tokens
    channels-last, where oneDNN's stride-``patch`` convolution writes NCHW and the LayerNorm then transposes it
    (Swin-T at 512x512: ~2-4 ms instead of ~8-11 ms, measured). Training too: the same gradients."""

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)``, sides multiples of ``patch`` -> ``(B, H/p, W/p, C)``."""
        if x.device.type != "cpu" or is_tracing():
            return super().project(x)
        b, c, h, w = x.shape
        p = self.patch_size
        # (B, C, H/p, p, W/p, p) -> (B, H/p, W/p, C, p, p): each row one patch in the kernel's (C, kh, kw) order
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h // p, w // p, c * p * p)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


@register
class FastPatchMerging(PatchMerging):
    """``PatchMerging`` with the ``4C -> 2C`` reduction through the fused linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        return linear(self.norm(self.neighbours(x)), self.reduction)


@register
class FastPatchExpand(PatchExpand):
    """``PatchExpand`` with the ``C -> 2C`` projection through the fused linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, 2H, 2W, C/2)``."""
        return self.norm(tokens_to_pixels(linear(x, self.expand), 2))


@register
class FastFinalPatchExpand(FinalPatchExpand):
    """``FinalPatchExpand`` with the ``C -> s*s*C`` projection through the fused linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, s*H, s*W, C)``."""
        return self.norm(tokens_to_pixels(linear(x, self.expand), self.scale))


@register
class FastSwinUpStage(SwinUpStage):
    """``SwinUpStage`` with the ``2C -> C`` skip projection through the fused linear."""

    def join(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """As ``SwinUpStage.join``: ``(B, H, W, C)``."""
        return linear(self.beside_skip(x, skip), self.concat)


@register
class FastSwinUnetDecoder(SwinUnetDecoder):
    """``SwinUnetDecoder`` whose CPU inference expands, normalises and classifies chunks of tokens."""

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, w, C)`` -> logits ``(B, K, s*h, s*w)``: ``classify_tiled`` in CPU inference."""
        return self.classify_tiled(x) if cpu_inference(x) else super().classify(x)

    def classify_tiled(self, x: torch.Tensor) -> torch.Tensor:
        """``conv_seg(up(x))`` for CPU inference, without the full-resolution ``C``-channel map.

        The final expansion, its per-pixel LayerNorm and the 1x1 classifier act on each pixel alone, so they run
        on chunks of tokens (``chunk_rows``): expand a chunk, normalise its ``s*s`` pixels of ``C`` channels and
        classify them while in cache; only the ``K``-channel logits are spread to pixels. At 224x224 the other
        order writes and reads a 224x224x96 map four times (expand, spread, norm, conv): 11 of the 55 ms per
        slice of a bf16 Swin-Unet-T forward. ``SwinUnetDecoder.classify`` is the reference.

        Args:
            x: ``(B, h, w, C)``, after ``norm``.

        Returns:
            Logits ``(B, K, s*h, s*w)``, channels-last in memory (as the 1x1 convolution of an NHWC map gives).
        """
        up, s = self.up, self.up.scale
        b, h, w, c = x.shape
        tokens = x.reshape(-1, c)
        weight = self.conv_seg.weight.flatten(1)  # (K, C)
        step = chunk_rows(s * s * c)
        chunks = []
        for i in range(0, tokens.shape[0], step):
            pixels = up.norm(linear(tokens[i:i + step], up.expand).view(-1, c))  # (n*s*s, C)
            chunks.append(F.linear(pixels, weight).view(-1, s, s, weight.shape[0]))  # (n, s, s, K)
        logits = torch.cat(chunks).view(b, h, w, s, s, -1).transpose(2, 3).reshape(b, h * s, w * s, -1)
        return logits.permute(0, 3, 1, 2)


__all__ = ["FastFinalPatchExpand", "FastPatchEmbed", "FastPatchExpand", "FastPatchMerging", "FastSwinBlock",
           "FastSwinUnetDecoder", "FastSwinUpStage", "FastWindowAttention", "cached_folded_mask",
           "clear_folded_masks"]
