"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3), for the CPU.

Why by hand: PyTorch's CPU convolutions (oneDNN) compute 3x3 kernels directly, 9 multiply-adds per input
channel and output pixel; oneDNN dropped its x64 Winograd kernels. F(2x2, 3x3) (Lavin & Gray, 2016) computes
each 2x2 output tile from a 4x4 input tile with 16 products instead of 36: in the transform domain the
convolution becomes 16 independent matrix products ``(C_out x C_in) @ (C_in x tiles)``, 2.25x fewer
multiply-adds, still at GEMM speed. UPerNet's 3x3 convolutions on the 1/4-scale map (``fpn_bottleneck``:
2048 -> 512 channels at 128x128 for a 512x512 image) are most of its FLOPs, forward and backward.

Transforms (``B^T``, ``G``, ``A^T`` below) are the standard F(2, 3) matrices; each image is processed in bands of
tile rows (``BAND_FLOATS``) so the transform domain (4x the map) never exists whole: the extra memory stays
under ~150 MiB whatever the layer (training-step peak memory is one of the things densekit is measured on). The backward pass is
Winograd too: the input gradient is the same convolution of the output gradient with the flipped, transposed
kernel; the weight gradient is ``sum over tiles of dM @ V^T`` in the transform domain, mapped back by ``G``.
In exact arithmetic all three equal the direct convolution's; in fp32 they differ by rounding (~1e-6
relative; ``tests/layers/test_winograd.py`` checks forward and backward against ``F.conv2d``).

``ConvModule`` uses it through ``use_winograd`` (CPU, fp32 outside autocast, not traced, 3x3 / stride 1 /
padding 1 / no dilation or groups, NCHW input, and layers big enough for it to pay); everything else keeps
``nn.Conv2d``, which is also the reference path (``ENABLED = False``, or ``DENSEKIT_WINOGRAD=0`` in the environment).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .window_attention import is_tracing

ENABLED = os.environ.get("DENSEKIT_WINOGRAD", "1") != "0"  # DENSEKIT_WINOGRAD=0: always nn.Conv2d
BAND_FLOATS = 1 << 24  # 64 MiB of fp32 transformed tiles at a time
# Where Winograd beats oneDNN's direct convolution (see `use_winograd`).
MIN_TRAIN_CHANNELS, MIN_TRAIN_PIXELS = 512 * 512, 32 * 32
MIN_INFER_IN_CHANNELS, MIN_INFER_PIXELS = 1024, 64 * 64

# F(2, 3): filter transform G (4x3), output transform A^T (2x4); the input transform
# B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]] is written out in `_transform`.
_G = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]]
_AT = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]]


def _matrices(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(G (4, 3), A^T kron A^T (4, 16))`` in ``x``'s dtype and device."""
    g, at = (torch.tensor(m, dtype=x.dtype, device=x.device) for m in (_G, _AT))
    return g, torch.kron(at, at)


def use_winograd(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether ``conv(x)`` should run through ``winograd_conv3x3`` (same result up to fp32 rounding, faster).

    Where it pays was measured on a 2-core AVX-512 CPU (forward + backward, batch 2): oneDNN's direct backward
    is the slow part, so in training 512 -> 512 channels at 32x32 and up gain 8-15% and 2048 -> 512 at 128x128
    gains 21%; smaller layers lose (the filter transform and the element-wise passes dominate). oneDNN's
    direct forward is fast, so inference only gains on wide inputs (2048 -> 512 at 128x128: 7%; 512 -> 512:
    3% slower)."""
    if not (ENABLED and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and conv.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and not is_tracing()
            and x.is_contiguous() and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros"):
        return False
    pixels = x.shape[-2] * x.shape[-1]
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return conv.in_channels * conv.out_channels >= MIN_TRAIN_CHANNELS and pixels >= MIN_TRAIN_PIXELS
    return conv.in_channels >= MIN_INFER_IN_CHANNELS and pixels >= MIN_INFER_PIXELS


def _padded(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, 2 rows + 2, 2 cols + 2)``: the conv's zero border, plus a zero row/column
    when ``H``/``W`` is odd (it only feeds outputs that are cropped)."""
    h, w = x.shape[-2:]
    return F.pad(x, (1, 2 * cols + 1 - w, 1, 2 * rows + 1 - h))


def _transform(x: torch.Tensor, dim: int, n: int, out: torch.Tensor) -> torch.Tensor:
    """``B^T`` along ``dim`` of overlapping 4-tap tiles at stride 2: ``out[k]`` (k = 0..3) gets ``d0 - d2``,
    ``d1 + d2``, ``d2 - d1``, ``d1 - d3`` where ``d_i = x.narrow(dim, i, 2 n)[::2]`` (``n`` tiles)."""
    d = [x.narrow(dim, i, 2 * n - 1).unfold(dim, 1, 2).squeeze(-1) for i in range(4)]
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])
    return out


def _input_tiles(xp: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Transformed 4x4 input tiles ``B^T d B`` of a padded ``(C, 2 rows + 2, 2 cols + 2)`` map:
    ``(16, C, rows * cols)``, index ``4 a + b`` for row transform ``a`` and column transform ``b``. Done
    separably with strided element-wise ops (columns, then rows): memory-bound passes, no gather copy."""
    c, hp, _ = xp.shape
    by_col = _transform(xp, 2, cols, xp.new_empty(4, c, hp, cols))  # (4 b, C, Hp, cols)
    tiles = _transform(by_col, 2, rows, xp.new_empty(4, 4, c, rows, cols))  # (4 a, 4 b, C, rows, cols)
    return tiles.view(16, c, rows * cols)


def _bands(rows: int, cols: int, channels: int) -> list[tuple[int, int]]:
    """Tile-row bands ``(r0, r1)`` whose transformed tiles (``16 x channels x tiles`` floats, input or output
    side) stay near ``BAND_FLOATS``: the transform domain is 4x the map, so it never exists whole."""
    step = max(1, BAND_FLOATS // (16 * channels * cols))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def _forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)``, ``(K, C, 3, 3)`` -> ``(B, K, H, W)``: ``F.conv2d(x, weight, padding=1)``."""
    batch, c, h, w = x.shape
    k = weight.shape[0]
    rows, cols = math.ceil(h / 2), math.ceil(w / 2)
    g, at2 = _matrices(x)
    u = torch.einsum("ai,kcij,bj->abkc", g, weight, g).reshape(16, k, c)  # transformed filters
    xp = _padded(x, rows, cols)
    out = x.new_empty(batch, k, 2 * rows, 2 * cols)
    for b in range(batch):
        for r0, r1 in _bands(rows, cols, max(c, k)):
            m = torch.bmm(u, _input_tiles(xp[b, :, 2 * r0:2 * r1 + 2], r1 - r0, cols))  # (16, K, tiles)
            y = (at2 @ m.view(16, -1)).view(2, 2, k, r1 - r0, cols)  # output tiles (2 p, 2 q, K, r, cols)
            out[b, :, 2 * r0:2 * r1].view(k, r1 - r0, 2, cols, 2).copy_(y.permute(2, 3, 0, 4, 1))
    return out if (2 * rows, 2 * cols) == (h, w) else out[:, :, :h, :w].contiguous()


def _weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)``, ``(B, K, H, W)`` -> ``(K, C, 3, 3)``: the gradient of ``_forward`` w.r.t. the weight."""
    batch, c, h, w = x.shape
    k = grad.shape[1]
    rows, cols = math.ceil(h / 2), math.ceil(w / 2)
    g, at2 = _matrices(x)
    xp = _padded(x, rows, cols)
    gp = F.pad(grad, (0, 2 * cols - w, 0, 2 * rows - h))  # cropped outputs have zero gradient
    du = x.new_zeros(16, k, c)
    for b in range(batch):
        for r0, r1 in _bands(rows, cols, max(c, k)):
            dy = gp[b, :, 2 * r0:2 * r1].view(k, r1 - r0, 2, cols, 2).permute(2, 4, 0, 1, 3).reshape(4, -1)
            dm = (at2.T @ dy).view(16, k, -1)  # (16, K, tiles)
            du.baddbmm_(dm, _input_tiles(xp[b, :, 2 * r0:2 * r1 + 2], r1 - r0, cols).transpose(1, 2))
    return torch.einsum("ai,abkc,bj->kcij", g, du.view(4, 4, k, c), g)


class _Winograd3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _forward(x, weight)
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _forward(grad, weight.transpose(0, 1).flip(2, 3)) if ctx.needs_input_grad[0] else None
        grad_w = _weight_grad(x, grad) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for ``x`` ``(B, C, H, W)``, ``weight`` ``(K, C, 3, 3)``, by
    Winograd F(2x2, 3x3), differentiable in all three."""
    if x.dim() != 4 or weight.shape[1:] != (x.shape[1], 3, 3):
        raise ValueError(f"winograd_conv3x3 needs x (B, C, H, W) and weight (K, C, 3, 3) with the same C, "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    return _Winograd3x3.apply(x, weight, bias)
