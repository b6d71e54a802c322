"""Window attention's fast path (row gathers, strided SDPA, both projection orders) against the reference."""
from __future__ import annotations

import pytest
import torch

from densekit.layers import fused_linear, window_attention
from densekit.layers.window_attention import WindowAttention, pad_and_shift, partition_windows, window_order


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("size", [(14, 21), (9, 10), (16, 16)])
def test_window_order_is_pad_shift_partition(size, shift):
    h, w = size
    tokens = torch.arange(1, 2 * h * w + 1, dtype=torch.float32).view(2, h, w, 1)  # 0 marks padding
    expected = partition_windows(pad_and_shift(tokens, 7, shift), 7).reshape(-1)
    order = window_order(h, w, 7, shift, 2, torch.device("cpu"))
    got = tokens.reshape(-1)[order.gather].clone()
    if order.pads is not None:
        got[order.pads] = 0
    assert torch.equal(got, expected)
    assert torch.equal(got[order.scatter], tokens.reshape(-1))  # scatter inverts the order
    assert (order.pads is None) == (h % 7 == 0 and w % 7 == 0)
    assert (order.is_pad is None) == (order.pads is None)
    if order.is_pad is not None:
        assert torch.equal(order.is_pad.nonzero().squeeze(1), order.pads)
    spare = torch.full((2 * h * w + 1,), -1.0)
    spare[order.dest] = got  # dest inverts the order too, padding rows into the spare row
    assert torch.equal(spare[:-1], tokens.reshape(-1))
    assert spare[-1].item() == (-1 if order.pads is None else 0)


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize(("dim", "size", "chunk_values"), [
    (16, (9, 10), 3 * 16 * 49),  # one window a tile, padding
    (16, (14, 21), 3 * 16 * 49 * 4),  # four windows a tile, the last tile short, no padding
    (16, (9, 10), 1 << 30),  # one tile
    (64, (9, 10), 1),  # much padding on a wide map: the projected-first path
])
def test_residual_tiled_equals_the_training_path(dim, size, chunk_values, shift, monkeypatch):
    """CPU inference's tiles (gather, norm, qkv, attention, projection + residual, copy back) against
    ``x + proj(attention(norm(x)))`` in grad mode, where nothing is tiled or fused."""
    monkeypatch.setattr(fused_linear, "CHUNK_VALUES", chunk_values)
    torch.manual_seed(0)
    attn = WindowAttention(dim, 2, 7).eval()
    torch.nn.init.normal_(attn.qkv.bias)
    norm = torch.nn.LayerNorm(dim)
    torch.nn.init.normal_(norm.bias)  # padding is zeroed after the norm: a bias would show through
    x = torch.randn(2, *size, dim)
    expected = x + attn.proj(attn.attend(norm(x), 7, shift))
    calls = []
    real_attend = WindowAttention._attend_windows
    monkeypatch.setattr(WindowAttention, "_attend_windows", lambda self, *a: calls.append(a[-1]) or
                        real_attend(self, *a))
    with torch.no_grad():
        assert fused_linear.fused_linear_available(x)
        got = attn.residual_tiled(x, norm, 7, shift)
    n_windows = 2 * -(-size[0] // 7) * -(-size[1] // 7)
    tile = max(1, chunk_values // (3 * dim) // 49)
    project_first = dim == 64
    assert calls == ([0] if project_first else list(range(0, n_windows, tile)))
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize(("dim", "project_first"), [(16, False), (64, True)])
@pytest.mark.parametrize("shift", [0, 3])
def test_fast_equals_reference_both_projection_orders(dim, project_first, shift, qkv_bias, monkeypatch):
    torch.manual_seed(0)
    fast = WindowAttention(dim, 2, 7, qkv_bias=qkv_bias)
    if qkv_bias:
        torch.nn.init.normal_(fast.qkv.bias)  # padded rows must carry it
    ref = WindowAttention(dim, 2, 7, qkv_bias=qkv_bias, attn_impl="reference")
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 9, 10, dim)  # 14x14 padded grid: 106 of 196 rows per image are padding
    taken = []
    real_embedding = window_attention.F.embedding
    monkeypatch.setattr(window_attention.F, "embedding", lambda idx, rows: taken.append(rows.shape[-1])
                        or real_embedding(idx, rows))
    outs, grads = [], []
    for module in (fast, ref):
        xi = x.clone().requires_grad_(True)
        out = module(xi, 7, shift)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append((xi.grad, {n: p.grad for n, p in module.named_parameters()}))
    assert taken[0] == (3 * dim if project_first else dim)  # which branch ran
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5
    assert (grads[0][0] - grads[1][0]).abs().max().item() < 1e-5
    for name, grad in grads[0][1].items():  # summed over many tokens: relative tolerance
        expected = grads[1][1][name]
        assert (grad - expected).abs().max().item() < 1e-5 * expected.abs().max().item(), name
    with torch.no_grad():
        assert (fast.eval()(x, 7, shift) - ref.eval()(x, 7, shift)).abs().max().item() < 1e-5
