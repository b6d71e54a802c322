"""Window attention's SDPA path (row gathers, strided SDPA, both projection orders) against the reference; the
CPU fast path (tiles of windows) is tested in tests/accel/test_swin_accel.py."""
from __future__ import annotations

import pytest
import torch

from densekit.layers import window_attention
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
