"""Fused oneDNN linear (bias, GELU, residual add) against the plain F.linear path, and the public fallback when the
private oneDNN ops are missing."""
from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.accel import fused_linear
from densekit.accel.fused_linear import cpu_inference, fused_ops_work, linear

# The fused tests need the private ops; the fallback tests below force them off and run anywhere.
needs_onednn = pytest.mark.skipif(not fused_ops_work(torch.float32), reason="no working oneDNN linear ops")


def _layer(n_in: int, n_out: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    if bias:
        nn.init.normal_(layer.bias)  # a zero bias would hide a dropped one
    return layer


def _fused_is_off(monkeypatch) -> None:
    """Force the public path, as on a PyTorch whose oneDNN ops are missing or fail their probe."""
    monkeypatch.setattr(fused_linear, "fused_ops_work", lambda dtype: False)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("activation", "with_residual"), [(None, False), ("gelu", False), (None, True)])
def test_fused_equals_plain_fp32(activation, with_residual, bias):
    layer = _layer(48, 80, bias)
    x = torch.randn(2, 7, 9, 48)
    residual = torch.randn(2, 7, 9, 80) if with_residual else None
    with torch.no_grad():
        assert cpu_inference(x)
        got = linear(x, layer, activation, residual)
    expected = F.linear(x, layer.weight, layer.bias)
    expected = F.gelu(expected) if activation else expected
    expected = expected + residual if with_residual else expected
    assert got.shape == expected.shape == (2, 7, 9, 80) and got.dtype == torch.float32
    assert (got - expected.detach()).abs().max().item() < 1e-5


@pytest.mark.skipif(not fused_ops_work(torch.bfloat16), reason="no working oneDNN bfloat16 linear ops")
@pytest.mark.parametrize(("activation", "with_residual"), [(None, False), ("gelu", False), (None, True)])
def test_fused_under_bf16_autocast_matches_autocast_dtypes(activation, with_residual):
    layer = _layer(64, 32)
    x = torch.randn(50, 64)
    residual = torch.randn(50, 32) if with_residual else None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear(x, layer, activation, residual)
        plain = F.linear(x, layer.weight, layer.bias)
        plain = F.gelu(plain) if activation else plain
        plain = residual + plain if with_residual else plain
    assert got.dtype == plain.dtype  # bf16, or float32 when a float32 residual is added
    ref = F.linear(x, layer.weight, layer.bias)
    ref = F.gelu(ref) if activation else ref
    ref = residual + ref if with_residual else ref
    assert (got.float() - ref.detach()).abs().max().item() < 0.05 * ref.abs().max().item()


@needs_onednn
@pytest.mark.parametrize("autocast", [False, True])
def test_packed_weights_follow_updates(autocast):
    layer = _layer(16, 8)
    x = torch.randn(4, 16)

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return linear(x, layer).float()

    def plain() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return F.linear(x, layer.weight, layer.bias).float()

    tol = 0.05 if autocast else 1e-5
    before = run()
    with torch.no_grad():
        layer.weight.mul_(2)  # an in-place update, as an optimizer step makes
        layer.bias.add_(1)
    assert not torch.allclose(before, run()) and (run() - plain()).abs().max().item() < tol
    layer.load_state_dict({"weight": torch.randn(8, 16), "bias": torch.randn(8)})
    assert (run() - plain()).abs().max().item() < tol
    layer.weight.data.mul_(-1)  # bypasses the version counter: the cache is stale until cleared
    fused_linear.clear_packed_weights()
    assert (run() - plain()).abs().max().item() < tol


@needs_onednn
def test_module_with_packed_weights_copies_and_pickles():
    layer = _layer(16, 8)
    x = torch.randn(4, 16)
    with torch.no_grad():
        expected = linear(x, layer)  # packs the weight (an opaque oneDNN tensor, not copyable)
        copied = copy.deepcopy(layer)
        buffer = io.BytesIO()
        torch.save(layer, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        for other in (copied, loaded):
            assert torch.equal(linear(x, other), expected)


def test_plain_path_when_autograd_records_or_tracing(monkeypatch):
    layer = _layer(8, 8)
    x = torch.randn(3, 8, requires_grad=True)
    assert not cpu_inference(x)  # grad mode on: the oneDNN ops have no backward
    linear(x, layer, "gelu").sum().backward()
    assert x.grad is not None and layer.weight.grad is not None
    monkeypatch.setattr(fused_linear, "is_tracing", lambda: True)
    with torch.no_grad():
        assert not cpu_inference(x)


def test_bad_arguments():
    layer = _layer(4, 4)
    with pytest.raises(ValueError, match="relu"):
        linear(torch.randn(2, 4), layer, "relu")
    with pytest.raises(ValueError, match="not both"):
        linear(torch.randn(2, 4), layer, "gelu", torch.randn(2, 4))


@needs_onednn
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize(("activation", "with_residual"), [(None, False), ("gelu", False), (None, True)])
def test_forced_fallback_equals_the_fused_path(activation, with_residual, autocast, monkeypatch):
    """Without the private ops ``linear`` computes the same values with public ones (and packs nothing)."""
    layer = _layer(48, 80)
    x = torch.randn(5, 48)
    residual = torch.randn(5, 80) if with_residual else None

    def run() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return linear(x, layer, activation, residual)

    fused = run()
    assert layer in fused_linear._PACKED  # the fused path ran
    fused_linear.clear_packed_weights()
    _fused_is_off(monkeypatch)
    public = run()
    assert layer not in fused_linear._PACKED  # the public path ran
    assert public.dtype == fused.dtype and public.shape == fused.shape
    tol = 0.05 * public.float().abs().max().item() if autocast else 1e-5
    assert (public.float() - fused.float()).abs().max().item() < tol


def test_detection_answers_false_without_working_ops(monkeypatch):
    """The probe itself: a build without oneDNN, ops renamed away, or ops that refuse this CPU answer False, once
    per dtype (cached), and ``linear`` then computes with the public ops."""

    def refuse(*args):
        raise RuntimeError("mkldnn_linear: bf16 path needs the cpu support avx512bw, avx512vl and avx512dq")

    fused_ops_work.cache_clear()
    try:
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert not fused_ops_work(torch.float32)
        monkeypatch.undo()
        for ops in (SimpleNamespace(), SimpleNamespace(_reorder_linear_weight=refuse)):
            fused_ops_work.cache_clear()
            monkeypatch.setattr(torch.ops, "mkldnn", ops)
            assert not fused_ops_work(torch.float32)
            monkeypatch.undo()
            assert not fused_ops_work(torch.float32)  # cached: the ops are back, the answer stays
        layer = _layer(8, 4)
        x = torch.randn(2, 8)
        with torch.no_grad():
            assert torch.equal(linear(x, layer, "gelu"), F.gelu(F.linear(x, layer.weight, layer.bias)))
        assert layer not in fused_linear._PACKED
    finally:
        monkeypatch.undo()
        fused_ops_work.cache_clear()
