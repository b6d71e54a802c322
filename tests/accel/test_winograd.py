"""Winograd F(2x2, 3x3) convolution: forward and all three gradients equal ``F.conv2d``'s (the reference path), and
the accelerated ``ConvModule`` equals the plain one."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.accel import optimize, winograd
from densekit.accel.winograd import FastConvModule, use_winograd, winograd_conv3x3
from densekit.layers.conv import ConvModule


@pytest.mark.parametrize(("batch", "channels", "out", "height", "width", "band", "bias"), [
    (2, 8, 5, 9, 7, 16 * 8 * 4 * 2, True),  # odd sizes (cropped tiles), bands of 2 tile rows (a ragged last one)
    (1, 16, 16, 6, 6, 1 << 24, False),      # even sizes, one band
    (2, 32, 24, 11, 10, 1, True),           # bands of one tile row
    (1, 4, 3, 1, 1, 1 << 24, True),         # a single pixel: all taps but the centre see padding
])
def test_forward_and_gradients_equal_conv2d(monkeypatch, batch, channels, out, height, width, band, bias):
    monkeypatch.setattr(winograd, "BAND_FLOATS", band)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out, channels, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    y, ref = winograd_conv3x3(x, w, b), F.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    inputs = (x, w) + ((b,) if bias else ())
    for got, expected in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)


def test_fp32_error_is_rounding_only():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 256, 32, 32, generator=gen)
    w = torch.randn(128, 256, 3, 3, generator=gen) / 48
    y, ref = winograd_conv3x3(x, w), F.conv2d(x, w, padding=1)
    assert (y - ref).abs().max() < 1e-5 * ref.abs().max()


def _train_and_infer_sizes(monkeypatch) -> None:
    monkeypatch.setattr(winograd, "MIN_TRAIN_WORK", 16 * 16 * 8 * 8)
    monkeypatch.setattr(winograd, "MIN_INFER_IN_CHANNELS", 32)
    monkeypatch.setattr(winograd, "MIN_INFER_PIXELS", 8 * 8)


def test_use_winograd_rule(monkeypatch):
    _train_and_infer_sizes(monkeypatch)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(1, 16, 8, 8)
    assert use_winograd(x, conv)  # training: the weight needs a gradient
    with torch.no_grad():
        assert not use_winograd(x, conv)  # inference: 16 input channels are too few
        assert use_winograd(torch.randn(1, 32, 8, 8), nn.Conv2d(32, 16, 3, padding=1))
    assert not use_winograd(torch.randn(1, 16, 4, 8), conv)  # too few pixels
    assert not use_winograd(x.contiguous(memory_format=torch.channels_last), conv)  # NCHW only
    for other in (nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.Conv2d(16, 16, 3, padding=2,
                  dilation=2), nn.Conv2d(16, 16, 3, padding=1, groups=2), nn.Conv2d(16, 16, 3, padding=0)):
        assert not use_winograd(x, other)
    assert not use_winograd(x.double(), conv.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_winograd(x, conv)


def test_conv_module_fast_path_matches_reference_path(monkeypatch):
    """ConvModule (conv + BN + ReLU) optimized (Winograd) vs plain (``nn.Conv2d``): outputs and every gradient."""
    _train_and_infer_sizes(monkeypatch)
    torch.manual_seed(0)
    original = ConvModule(32, 24, 3, padding=1)
    x = torch.randn(2, 32, 12, 10, requires_grad=True)
    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *args: calls.append(1) or real(*args))
    results = {}
    for enabled in (True, False):
        module = optimize(copy.deepcopy(original), enabled)  # the same BatchNorm statistics for both paths
        assert (type(module) is FastConvModule) is enabled
        calls.clear()
        x.grad = None
        y = module(x)
        y.square().sum().backward()
        with torch.no_grad():
            module.eval()
            inference = module(x)
            module.train()
        results[enabled] = (y, x.grad, module.conv.weight.grad, inference)
        assert len(calls) == (2 if enabled else 0)  # the training and the inference forward
    for fast, reference in zip(results[True], results[False]):
        torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"got \(1, 4, 5, 5\) and \(2, 3, 3, 3\)"):
        winograd_conv3x3(torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3))
