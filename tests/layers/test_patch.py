"""PatchEmbed and PatchMerging of the network path: padding, shapes, the convolution, input checks. The CPU fast
paths (the unfolded patch GEMM, the fused merging linear) are tested in tests/accel/test_swin_accel.py."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.layers.patch import PatchEmbed, PatchMerging


def _embed(in_chans: int, dim: int, patch: int) -> PatchEmbed:
    torch.manual_seed(0)
    embed = PatchEmbed(in_chans, dim, patch).double()
    nn.init.normal_(embed.proj.bias)  # a zero bias would hide a dropped one
    return embed


def test_forward_pads_then_convolves():
    embed = _embed(3, 8, 4).float().eval()
    x = torch.randn(1, 3, 17, 22)  # padded to 20 x 24 inside
    with torch.no_grad():
        out = embed(x)
        ref = embed.norm(embed.proj(F.pad(x, (0, 2, 0, 3))).permute(0, 2, 3, 1))
    assert out.shape == (1, 5, 6, 8)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 32, 32)])
def test_wrong_input_shape_is_named(shape):
    embed = _embed(3, 8, 4).float()
    with pytest.raises(ValueError, match=re.escape(f"expects (B, 3, H, W), got {shape}")):
        embed(torch.randn(*shape))


def test_patch_merging_pads_odd_sides_in_official_order():
    torch.manual_seed(0)
    merge = PatchMerging(8)
    x = torch.randn(2, 5, 4, 8)
    padded = F.pad(x, (0, 0, 0, 0, 0, 1))  # 5 rows -> 6
    x0, x1, x2, x3 = padded[:, 0::2, 0::2], padded[:, 1::2, 0::2], padded[:, 0::2, 1::2], padded[:, 1::2, 1::2]
    expected = merge.reduction(merge.norm(torch.cat([x0, x1, x2, x3], -1)))
    torch.testing.assert_close(merge(x), expected)
    assert merge(x).shape == (2, 3, 2, 16)
