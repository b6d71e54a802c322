"""3x3 convolutions (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3), for the CPU.

Why by hand: PyTorch's CPU convolutions (oneDNN) compute 3x3 kernels directly, 9 multiply-adds per input
channel and output pixel; oneDNN dropped its x64 Winograd kernels. F(2x2, 3x3) (Lavin & Gray, 2016) computes
each 2x2 output tile from a 4x4 input tile with 16 products instead of 36: in the transform domain the
convolution becomes 16 independent matrix products ``(C_out x C_in) @ (C_in x tiles)``, 2.25x fewer
multiply-adds, still at GEMM speed. UPerNet's 3x3 convolutions on the 1/4-scale map (``fpn_bottleneck``:
2048 -> 512 channels at 128x128 for a 512x512 image) are most of its FLOPs, forward and backward.

Transforms (``B^T``, ``G``, ``A^T`` below) are the standard F(2, 3) matrices; each image is processed in bands of
tile rows (``BAND_FLOATS``) so the transform domain (4x the map) never exists whole: the extra memory stays
near 200 MiB whatever the layer, in buffers reused by every band. The backward pass is Winograd too: the
input gradient is the same convolution of the output gradient with the flipped, transposed kernel; the weight
gradient is ``sum over tiles of dM @ V^T`` in the transform domain, mapped back by ``G``.
In exact arithmetic all three equal the direct convolution's; in fp32 they differ by rounding (~1e-6
relative; ``tests/accel/test_winograd.py`` checks forward and backward against ``F.conv2d``).

``FastConvModule`` (the accelerated ``ConvModule`` that ``densekit.accel.optimize`` installs) uses it through
``use_winograd`` (CPU, fp32 outside autocast, not traced, 3x3 / stride 1 / padding 1 / no dilation or groups,
NCHW input, and layers big enough for it to pay); everything else keeps ``nn.Conv2d``, which is also the
reference path (the plain ``ConvModule``). First derivatives only (no double backward).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.conv import ConvModule
from ..layers.tracing import is_tracing
from . import register

BAND_FLOATS = 1 << 24  # 64 MiB of fp32 transformed tiles at a time
# Where Winograd beats oneDNN's direct convolution (see `use_winograd`).
MIN_TRAIN_WORK = 512 * 512 * 32 * 32  # C_in * C_out * H * W
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

    Where it pays was measured on a 2-core AVX-512 CPU. Training (forward + backward, batch 2): 2048 -> 512
    channels at 128x128 takes 0.62x oneDNN's direct time, 512 -> 512 at 128x128 0.68x, at 32x32 0.87x,
    256 -> 256 at 64x64 0.77x, but 384 -> 256 at 32x32 1.14x (the filter transform and the element-wise
    passes dominate small layers): hence ``C_in * C_out * H * W >= MIN_TRAIN_WORK``. oneDNN's direct forward
    is faster than its backward, so inference gains on wide inputs only (batch 1, 128x128: 2048 -> 512 0.69x,
    1024 -> 512 0.74x, 512 -> 512 1.10x)."""
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and conv.weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and not is_tracing()
            and x.is_contiguous() and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros"):
        return False
    pixels = x.shape[-2] * x.shape[-1]
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return conv.in_channels * conv.out_channels * pixels >= MIN_TRAIN_WORK
    return conv.in_channels >= MIN_INFER_IN_CHANNELS and pixels >= MIN_INFER_PIXELS


class _Workspace:
    """Scratch buffers of one call, reused by every band. A fresh large allocation is mapped and zeroed page by
    page by the kernel each time, which here would cost as much as the arithmetic."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like, self.buffers = like, {}

    def get(self, name: str, *shape: int) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = self.buffers[name] = self.like.new_empty(numel)
        return buffer[:numel].view(shape)


def _band_rows(x: torch.Tensor, first: int, count: int, width: int, left: int, out: torch.Tensor) -> torch.Tensor:
    """``out`` ``(C, count, width)`` = rows ``first .. first + count - 1`` of ``x`` ``(C, H, W)``, its columns
    placed from ``left``; rows and columns outside ``x`` are zero (the conv's padding)."""
    h, w = x.shape[-2:]
    lo, hi = max(0, first), min(h, first + count)
    out[:, lo - first:hi - first, left:left + w].copy_(x[:, lo:hi])
    out[:, :lo - first].zero_()
    out[:, hi - first:].zero_()
    out[:, lo - first:hi - first, :left].zero_()
    out[:, lo - first:hi - first, left + w:].zero_()
    return out


def _transform(x: torch.Tensor, dim: int, n: int, out: torch.Tensor) -> torch.Tensor:
    """``B^T`` along ``dim`` of overlapping 4-tap tiles at stride 2: ``out[k]`` (k = 0..3) gets ``d0 - d2``,
    ``d1 + d2``, ``d2 - d1``, ``d1 - d3`` where ``d_i = x.narrow(dim, i, 2 n)[::2]`` (``n`` tiles)."""
    d = [x.narrow(dim, i, 2 * n - 1).unfold(dim, 1, 2).squeeze(-1) for i in range(4)]
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])
    return out


def _input_tiles(x: torch.Tensor, r0: int, r1: int, cols: int, ws: _Workspace) -> torch.Tensor:
    """Transformed 4x4 input tiles ``B^T d B`` of tile rows ``r0:r1`` of one image ``x`` ``(C, H, W)`` (zero
    padded by one): ``(16, C, (r1 - r0) * cols)``, index ``4 a + b`` for row transform ``a`` and column
    transform ``b``. Done separably with strided element-wise ops (columns, then rows), no gather copy."""
    c, rows = x.shape[0], r1 - r0
    band = _band_rows(x, 2 * r0 - 1, 2 * rows + 2, 2 * cols + 2, 1, ws.get("band", c, 2 * rows + 2, 2 * cols + 2))
    by_col = _transform(band, 2, cols, ws.get("by_col", 4, c, 2 * rows + 2, cols))  # (4 b, C, rows', cols)
    tiles = _transform(by_col, 2, rows, ws.get("tiles", 4, 4, c, rows, cols))  # (4 a, 4 b, C, rows, cols)
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
    out = x.new_empty(batch, k, 2 * rows, 2 * cols)
    ws = _Workspace(x)
    for b in range(batch):
        for r0, r1 in _bands(rows, cols, max(c, k)):
            n = (r1 - r0) * cols
            m = torch.bmm(u, _input_tiles(x[b], r0, r1, cols, ws), out=ws.get("m", 16, k, n))
            y = torch.mm(at2, m.view(16, -1), out=ws.get("y", 4, k * n))  # output tiles (2 p x 2 q, K, r, cols)
            out[b, :, 2 * r0:2 * r1].view(k, r1 - r0, 2, cols, 2).copy_(
                y.view(2, 2, k, r1 - r0, cols).permute(2, 3, 0, 4, 1))
    return out if (2 * rows, 2 * cols) == (h, w) else out[:, :, :h, :w].contiguous()


def _weight_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)``, ``(B, K, H, W)`` -> ``(K, C, 3, 3)``: the gradient of ``_forward`` w.r.t. the weight."""
    batch, c, h, w = x.shape
    k = grad.shape[1]
    rows, cols = math.ceil(h / 2), math.ceil(w / 2)
    g, at2 = _matrices(x)
    du = x.new_zeros(16, k, c)
    ws = _Workspace(x)
    for b in range(batch):
        for r0, r1 in _bands(rows, cols, max(c, k)):
            n = (r1 - r0) * cols
            # The output gradient of these tiles, cropped outputs zero: (2 p x 2 q, K * tiles).
            band = _band_rows(grad[b], 2 * r0, 2 * (r1 - r0), 2 * cols, 0, ws.get("grad", k, 2 * (r1 - r0), 2 * cols))
            dy = ws.get("dy", 2, 2, k, r1 - r0, cols)
            dy.copy_(band.view(k, r1 - r0, 2, cols, 2).permute(2, 4, 0, 1, 3))
            dm = torch.mm(at2.T, dy.view(4, -1), out=ws.get("m", 16, k * n)).view(16, k, n)
            du.baddbmm_(dm, _input_tiles(x[b], r0, r1, cols, ws).transpose(1, 2))
    return torch.einsum("ai,abkc,bj->kcij", g, du.view(4, 4, k, c), g)


class _Winograd3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = _forward(x, weight)
        return out if bias is None else out.add_(bias.view(1, -1, 1, 1))

    @staticmethod
    @torch.autograd.function.once_differentiable
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


@register
class FastConvModule(ConvModule):
    """``ConvModule`` whose large 3x3 convolutions on the CPU run by Winograd F(2x2, 3x3) (``use_winograd``), in
    training and inference alike; the plain ``ConvModule`` (``nn.Conv2d``) is the reference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``."""
        if not use_winograd(x, self.conv):
            return super().forward(x)
        return self.norm_act(winograd_conv3x3(x, self.conv.weight, self.conv.bias))
