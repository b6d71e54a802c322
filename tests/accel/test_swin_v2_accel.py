"""densekit.accel's Swin V2 fast paths against the network's own path: tiled cosine attention with the res-post-norm
residual, the block's MLP chunks, the fused V2 patch merging, and the folded-mask cache (filled in inference,
bypassed in training, refreshed when the position-bias MLP changes, emptied by ``clear_caches``)."""
from __future__ import annotations

import copy

import pytest
import torch

from densekit.accel import clear_caches, fused_linear, optimize, restore
from densekit.accel import swin_v2 as accel_v2
from densekit.accel.swin_v2 import FastCosineWindowAttention, FastPatchMergingV2, FastSwinV2Block
from densekit.backbones.swin_v2 import PatchMergingV2, SwinTransformerV2, SwinV2Block
from densekit.layers.cosine_attention import CosineWindowAttention

TOL = 1e-4


def _pair(attn_impl: str = "sdpa", **kwargs) -> tuple[SwinTransformerV2, SwinTransformerV2]:
    """(optimized slim V2, plain slim V2 with ``attn_impl``), the same noisy weights (norms, logit scales and
    biases moved off their init, so a misplaced norm, clamp or dropped bias shows)."""
    torch.manual_seed(0)
    plain = SwinTransformerV2(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 4, 8), drop_path_rate=0.0,
                              out_norm=False, attn_impl=attn_impl, **kwargs).eval()
    with torch.no_grad():
        for name, param in plain.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    fast = SwinTransformerV2(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 4, 8), drop_path_rate=0.0,
                             out_norm=False, **kwargs).eval()
    fast.load_state_dict(plain.state_dict())
    return optimize(fast), plain


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_optimize_swaps_the_v2_modules_and_restore_puts_them_back():
    fast, _ = _pair()
    kinds = {type(m) for m in fast.modules()}
    assert {FastCosineWindowAttention, FastSwinV2Block, FastPatchMergingV2} <= kinds
    restore(fast)
    kinds = {type(m) for m in fast.modules()}
    assert {CosineWindowAttention, SwinV2Block, PatchMergingV2} <= kinds and FastSwinV2Block not in kinds


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
@pytest.mark.parametrize(("size", "window", "pretrained"), [
    ((100, 76), 8, 0),  # padding at every stage
    ((61, 133), 8, 0),  # odd sides, padding and shifts
    ((128, 128), 16, 8),  # window 16 from a window-8 file, a map no larger than the window from stage 2 on
])
def test_fast_paths_equal_the_network(size, window, pretrained, impl):
    fast, plain = _pair(impl, window_size=window, pretrained_window_size=pretrained)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got, again = plain(x), fast(x), fast(x)  # `again`: from the cached folded masks
    assert _max_diff(got, expected) < TOL
    assert _max_diff(again, got) == 0.0


@pytest.mark.parametrize("chunk_values", [3 * 32 * 64, 1 << 30])  # one window a tile; one tile
def test_tiles_of_any_length_give_the_same_maps(chunk_values, monkeypatch):
    fast, plain = _pair()
    monkeypatch.setattr(fused_linear, "CHUNK_VALUES", chunk_values)
    x = torch.randn(1, 3, 72, 88, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert _max_diff(fast(x), plain(x)) < TOL


def test_the_mask_cache_follows_the_position_bias_mlp_and_clear_caches_empties_it():
    fast, plain = _pair(window_size=8)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    clear_caches()
    with torch.no_grad():
        fast(x)
        assert len(accel_v2._FOLDED) == 8  # one per block
        for model in (fast, plain):  # an in-place update (optimizer step, load_state_dict) bumps the version
            model.stages[0].blocks[1].attn.cpb_mlp[2].weight.mul_(3.0)
        assert _max_diff(fast(x), plain(x)) < TOL
    clear_caches()
    assert len(accel_v2._FOLDED) == 0


def test_training_bypasses_the_cache_and_gives_the_networks_gradients():
    fast, plain = _pair(window_size=8)
    clear_caches()
    fast.train(), plain.train()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    sum(m.square().mean() for m in fast(x)).backward()
    sum(m.square().mean() for m in plain(x)).backward()
    assert len(accel_v2._FOLDED) == 0
    grads = dict(plain.named_parameters())
    for name, param in fast.named_parameters():
        torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_deep_copy_of_an_optimized_model_runs():
    fast, plain = _pair(window_size=8)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        fast(x)
        assert _max_diff(copy.deepcopy(fast)(x), plain(x)) < TOL
