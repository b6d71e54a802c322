"""PatchEmbed's CPU path (unfolded patches times the flattened kernel) against its convolution."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from densekit.layers.patch import PatchEmbed, PatchMerging


def _embed(in_chans: int, dim: int, patch: int) -> PatchEmbed:
    torch.manual_seed(0)
    embed = PatchEmbed(in_chans, dim, patch).double()
    nn.init.normal_(embed.proj.bias)  # a zero bias would hide a dropped one
    return embed


@pytest.mark.parametrize(("in_chans", "patch", "size"),
                         [(3, 4, (32, 40)), (1, 4, (8, 4)), (3, 2, (6, 10)), (2, 4, (4, 4))])
def test_unfolded_projection_equals_convolution(in_chans, patch, size):
    embed = _embed(in_chans, 16, patch)
    x = torch.randn(2, in_chans, *size, dtype=torch.float64, requires_grad=True)
    fast = embed.project_unfolded(x)
    ref = embed.project_conv(x)
    assert fast.shape == ref.shape == (2, size[0] // patch, size[1] // patch, 16)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)

    grad = torch.randn_like(ref)
    fast_grads = torch.autograd.grad(fast, (x, embed.proj.weight, embed.proj.bias), grad)
    ref_grads = torch.autograd.grad(ref, (x, embed.proj.weight, embed.proj.bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=f"{name} gradient differs")


def test_forward_pads_and_uses_the_unfolded_path_on_cpu(monkeypatch):
    embed = _embed(3, 8, 4).float().eval()
    x = torch.randn(1, 3, 17, 22)  # padded to 20 x 24 inside
    calls = []
    monkeypatch.setattr(PatchEmbed, "project_unfolded",
                        lambda self, t: calls.append(tuple(t.shape)) or PatchEmbed.project_conv(self, t))
    with torch.no_grad():
        out = embed(x)
    assert calls == [(1, 3, 20, 24)]
    assert out.shape == (1, 5, 6, 8)


@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_equals_the_convolution_reference_fp32(channels_last):
    embed = _embed(3, 24, 4).float().eval()
    x = torch.randn(2, 3, 28, 36)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)  # the benchmark's channels_last mode
    with torch.no_grad():
        out = embed(x)
        ref = embed.norm(embed.project_conv(x))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32)])
def test_wrong_input_shape_is_named(shape):
    embed = _embed(3, 8, 4).float()
    with pytest.raises(ValueError, match=re.escape(f"expects (B, 3, H, W), got {shape}")):
        embed(torch.randn(*shape))


def test_patch_merging_inference_equals_training_path():
    """Inference takes the fused oneDNN linear on CPU; grad mode the plain one: the same numbers."""
    torch.manual_seed(0)
    merge = PatchMerging(8)
    x = torch.randn(2, 6, 5, 8)
    with torch.no_grad():
        fast = merge(x)
    ref = merge(x)
    assert fast.shape == (2, 3, 3, 16)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
