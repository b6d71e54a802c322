"""mmsegmentation layout: the nn.Unfold channel permutation, both directions, and full checkpoints."""
from __future__ import annotations

import torch
from swin2mmseg_reference import correct_unfold_norm_order, correct_unfold_reduction_order
from torch import nn

from densekit.convert.mmseg import (
    densekit_to_mmseg,
    mmseg_to_densekit,
    official_to_unfold_norm,
    official_to_unfold_reduction,
    unfold_to_official_norm,
    unfold_to_official_reduction,
)
from densekit.convert.timm import timm_to_densekit
from densekit.layers.patch import PatchMerging


class UnfoldPatchMerging(nn.Module):
    """mmcv/mmseg PatchMerging: NCHW -> nn.Unfold(2, stride 2) -> (B, L, 4C) -> norm -> reduction."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.sampler = nn.Unfold(kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H/2, W/2, 2C)``."""
        b, h, w, _ = x.shape
        x = self.sampler(x.permute(0, 3, 1, 2))  # (B, 4C, L), channel c*4 + kh*2 + kw
        x = self.reduction(self.norm(x.transpose(1, 2)))
        return x.view(b, h // 2, w // 2, -1)


def test_permutation_functions_are_exact_inverses_and_match_swin2mmseg():
    weight, norm = torch.randn(16, 32), torch.randn(32)
    assert torch.equal(official_to_unfold_reduction(weight), correct_unfold_reduction_order(weight))
    assert torch.equal(official_to_unfold_norm(norm), correct_unfold_norm_order(norm))
    assert not torch.equal(official_to_unfold_reduction(weight), weight)  # not the identity
    assert torch.equal(unfold_to_official_reduction(official_to_unfold_reduction(weight)), weight)
    assert torch.equal(unfold_to_official_norm(official_to_unfold_norm(norm)), norm)
    assert torch.equal(official_to_unfold_reduction(unfold_to_official_reduction(weight)), weight)


def test_unfold_merging_with_mmseg_weights_equals_densekit_merging_with_converted_weights():
    torch.manual_seed(0)
    dim = 8
    mmseg_merge = UnfoldPatchMerging(dim).eval()
    with torch.no_grad():
        mmseg_merge.norm.weight.normal_()
        mmseg_merge.norm.bias.normal_()
    ours = PatchMerging(dim).eval()
    ours.load_state_dict({
        "norm.weight": unfold_to_official_norm(mmseg_merge.norm.weight.detach()),
        "norm.bias": unfold_to_official_norm(mmseg_merge.norm.bias.detach()),
        "reduction.weight": unfold_to_official_reduction(mmseg_merge.reduction.weight.detach()),
    })
    x = torch.randn(2, 6, 10, dim)
    with torch.no_grad():
        expected, got = mmseg_merge(x), ours(x)
        unconverted = PatchMerging(dim).eval()
        unconverted.load_state_dict(mmseg_merge.state_dict(), strict=False)
        wrong = unconverted(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (wrong - expected).abs().max() > 1e-2  # the permutation matters


def test_densekit_mmseg_round_trip_is_exact(timm_state_dict):
    densekit_sd, _ = timm_to_densekit(timm_state_dict)
    densekit_sd.update({f"out_norms.{i}.weight": torch.randn(96 * 2**i) for i in range(3)})
    densekit_sd.update({f"out_norms.{i}.bias": torch.randn(96 * 2**i) for i in range(3)})
    mmseg_sd = densekit_to_mmseg(densekit_sd)
    assert {"patch_embed.projection.weight", "norm0.weight", "norm3.bias",
            "stages.2.blocks.5.attn.w_msa.qkv.weight", "stages.0.blocks.0.ffn.layers.0.0.weight",
            "stages.3.blocks.1.ffn.layers.1.bias"} <= mmseg_sd.keys()
    assert torch.equal(mmseg_sd["stages.1.downsample.reduction.weight"],
                       correct_unfold_reduction_order(densekit_sd["stages.1.downsample.reduction.weight"]))
    back, report = mmseg_to_densekit(mmseg_sd)
    assert back.keys() == densekit_sd.keys() and report.dropped == []
    for key, value in densekit_sd.items():
        assert torch.equal(back[key], value), key


