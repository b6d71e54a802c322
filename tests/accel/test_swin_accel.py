"""densekit.accel's Swin fast paths against the network's own path: tiled window attention, the block's MLP chunks,
the folded-mask cache, the unfolded patch embedding, the fused patch merging and expanding, the Swin-Unet
decoder's tiled classifier, and whole models with the private oneDNN ops forced off."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from densekit.accel import fused_linear, optimize
from densekit.accel import swin as accel_swin
from densekit.accel.fused_linear import cpu_inference
from densekit.accel.swin import FastPatchEmbed, FastSwinBlock, FastWindowAttention
from densekit.backbones.swin import SwinBlock, SwinTransformer
from densekit.layers.patch import PatchEmbed, PatchMerging
from densekit.layers.window_attention import WindowAttention
from densekit.models import SwinUnet

SLIM_UNET = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.0,
                 in_chans=1)


def _pair(**kwargs) -> tuple[SwinTransformer, SwinTransformer]:
    """(optimized sdpa Swin, plain reference Swin) with the same weights."""
    torch.manual_seed(0)
    fast = SwinTransformer(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 4, 8), drop_path_rate=0.0, **kwargs)
    ref = SwinTransformer(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 4, 8), drop_path_rate=0.0,
                          attn_impl="reference", **kwargs)
    ref.load_state_dict(fast.state_dict())
    return optimize(fast), ref


def _slim_unet(num_classes: int = 3) -> SwinUnet:
    torch.manual_seed(0)
    return SwinUnet(backbone=dict(SLIM_UNET), decode_head=dict(num_classes=num_classes))


# ------------------------------------------------------------------------------------------ attention
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
    attn = optimize(WindowAttention(dim, 2, 7).eval())
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
        assert cpu_inference(x)
        got = attn.residual_tiled(x, norm, 7, shift)
    n_windows = 2 * -(-size[0] // 7) * -(-size[1] // 7)
    tile = max(1, chunk_values // (3 * dim) // 49)
    project_first = dim == 64
    assert calls == ([0] if project_first else list(range(0, n_windows, tile)))
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("dim", [16, 64])  # 64: much padding, the projected-first branch
@pytest.mark.parametrize("shift", [0, 3])
def test_fused_attention_equals_reference(dim, shift, qkv_bias):
    """The optimized attention on its own (fused qkv, cached folded mask) against the reference, both branches."""
    torch.manual_seed(0)
    fast = optimize(WindowAttention(dim, 2, 7, qkv_bias=qkv_bias).eval())
    if qkv_bias:
        torch.nn.init.normal_(fast.qkv.bias)  # padded rows must carry it
    ref = WindowAttention(dim, 2, 7, qkv_bias=qkv_bias, attn_impl="reference").eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 9, 10, dim)
    with torch.no_grad():
        got, expected = fast(x, 7, shift), ref(x, 7, shift)
    assert fast in accel_swin._FOLDED  # the cached mask was used
    assert (got - expected).abs().max().item() < 1e-5


def test_sdpa_equals_reference_in_eval_with_cache():
    fast, ref = _pair()
    fast.eval(), ref.eval()
    x = torch.randn(1, 3, 90, 130)
    with torch.no_grad():
        first = fast(x)
        attn = fast.stages[0].blocks[1].attn
        cached = dict(accel_swin._FOLDED[attn])
        second = fast(x)
        expected = ref(x)
    assert len(cached) == 1 and next(iter(cached.values())) is next(iter(accel_swin._FOLDED[attn].values()))
    for a, b, c in zip(first, second, expected):
        assert torch.equal(a, b)
        assert (a - c).abs().max().item() < 1e-5


def test_mask_cache_follows_weight_updates():
    fast, _ = _pair()
    fast.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = fast(x)[0]
        table = fast.stages[0].blocks[0].attn.relative_position_bias_table
        table.add_(torch.randn_like(table))  # a constant would cancel in the softmax
        after = fast(x)[0]
    assert not torch.allclose(before, after)


def test_larger_window_matches_reference():
    fast, ref = _pair(window_size=12)
    x = torch.randn(1, 3, 200, 180)
    with torch.no_grad():
        for a, b in zip(fast.eval()(x), ref.eval()(x)):
            assert (a - b).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("chunk_values", [1, 1000, 1 << 30])
def test_block_inference_chunks_equal_the_training_path(chunk_values, monkeypatch):
    """The fused CPU inference path (window tiles, MLP row chunks added in place) at several chunk sizes
    against the same block's plain path (grad mode)."""
    monkeypatch.setattr(fused_linear, "CHUNK_VALUES", chunk_values)
    torch.manual_seed(0)
    block = optimize(SwinBlock(32, 2, 7, shift=True).eval())
    x = torch.randn(2, 10, 23, 32)
    expected = block(x)  # grad mode: the plain path
    with torch.no_grad():
        assert cpu_inference(x)
        got = block(x)
    assert not torch.equal(got, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_block_takes_the_tiled_path_only_in_cpu_inference(monkeypatch):
    torch.manual_seed(0)
    block = optimize(SwinBlock(16, 2, 7).eval())
    calls = []
    real = FastWindowAttention.residual_tiled
    monkeypatch.setattr(FastWindowAttention, "residual_tiled", lambda self, *a: calls.append(1) or real(self, *a))
    x = torch.randn(1, 9, 9, 16)
    block(x)  # autograd recording: the network's path
    with torch.no_grad():
        block.train()(x)  # training mode: the network's path
        reference = copy.deepcopy(block)
        reference.attn.attn_impl = "reference"
        reference.eval()(x)  # reference attention: the network's path, whole
        assert calls == []
        block.eval()(x)
    assert calls == [1]


# ------------------------------------------------------------------------------------- patch layers
def _embed(in_chans: int, dim: int, patch: int) -> PatchEmbed:
    torch.manual_seed(0)
    embed = PatchEmbed(in_chans, dim, patch).double()
    nn.init.normal_(embed.proj.bias)  # a zero bias would hide a dropped one
    return embed


@pytest.mark.parametrize(("in_chans", "patch", "size"),
                         [(3, 4, (32, 40)), (1, 4, (8, 4)), (3, 2, (6, 10)), (2, 4, (4, 4))])
def test_unfolded_projection_equals_convolution(in_chans, patch, size):
    embed = _embed(in_chans, 16, patch)
    fast_embed = optimize(copy.deepcopy(embed))
    x = torch.randn(2, in_chans, *size, dtype=torch.float64, requires_grad=True)
    fast = fast_embed.project(x)
    ref = embed.project(x)
    assert fast.shape == ref.shape == (2, size[0] // patch, size[1] // patch, 16)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)

    grad = torch.randn_like(ref)
    fast_grads = torch.autograd.grad(fast, (x, fast_embed.proj.weight, fast_embed.proj.bias), grad)
    ref_grads = torch.autograd.grad(ref, (x, embed.proj.weight, embed.proj.bias), grad)
    for name, a, b in zip(("input", "weight", "bias"), fast_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=f"{name} gradient differs")


def test_forward_pads_and_uses_the_unfolded_path_on_cpu():
    embed = optimize(_embed(3, 8, 4).float().eval())
    assert type(embed) is FastPatchEmbed
    convolutions = []
    embed.proj.register_forward_hook(lambda *args: convolutions.append(1))
    x = torch.randn(1, 3, 17, 22)  # padded to 20 x 24 inside
    with torch.no_grad():
        out = embed(x)
    assert convolutions == []  # the GEMM, not the convolution module
    assert out.shape == (1, 5, 6, 8)


@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_equals_the_convolution_reference_fp32(channels_last):
    embed = _embed(3, 24, 4).float().eval()
    fast = optimize(copy.deepcopy(embed))
    x = torch.randn(2, 3, 28, 36)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)  # the benchmark's channels_last mode
    with torch.no_grad():
        out = fast(x)
        ref = embed(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_patch_merging_inference_equals_training_path():
    """Inference takes the fused oneDNN linear on CPU; grad mode the plain one: the same numbers."""
    torch.manual_seed(0)
    merge = optimize(PatchMerging(8))
    x = torch.randn(2, 6, 5, 8)
    with torch.no_grad():
        fast = merge(x)
    ref = merge(x)
    assert fast.shape == (2, 3, 3, 16)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------- Swin-Unet
@pytest.mark.parametrize("chunk_values", [None, 16 * 16 * 7])  # default: one chunk; else 7 tokens, a short last one
def test_tiled_classifier_equals_expand_then_conv(monkeypatch, chunk_values):
    """CPU inference classifies chunks of tokens (``classify_tiled``); the reference expands the whole map, then
    normalises and convolves it."""
    if chunk_values:
        monkeypatch.setattr(fused_linear, "CHUNK_VALUES", chunk_values)
    decoder = optimize(_slim_unet(num_classes=5).eval()).decode_head
    nn.init.normal_(decoder.up.norm.weight)  # LayerNorm's default affine would hide a dropped one
    nn.init.normal_(decoder.up.norm.bias)
    x = torch.randn(2, 5, 6, 16)
    with torch.no_grad():
        assert cpu_inference(x)
        tiled = decoder.classify(x)
        reference = decoder.conv_seg(decoder.up(x).permute(0, 3, 1, 2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tiled_bf16 = decoder.classify(x)
            reference_bf16 = decoder.conv_seg(decoder.up(x).permute(0, 3, 1, 2))
    assert tiled.shape == reference.shape == (2, 5, 20, 24)
    assert (tiled - reference).abs().max().item() < 1e-5
    assert tiled.is_contiguous(memory_format=torch.channels_last)  # the tiled path ran (the conv's is not)
    assert tiled_bf16.dtype == reference_bf16.dtype == torch.bfloat16
    assert (tiled_bf16.float() - reference_bf16.float()).abs().max().item() < 0.05 * reference.abs().max().item()


def test_swin_unet_inference_path_equals_training_path():
    """The whole optimized model without autograd (fused and tiled kernels) against the plain model recording
    autograd."""
    model = _slim_unet().eval()
    fast = optimize(copy.deepcopy(model))
    x = torch.randn(2, 1, 100, 75)
    with torch.no_grad():
        got = fast(x)
    assert (got - model(x).detach()).abs().max().item() < 1e-4


# ---------------------------------------------------------------------------------- forced fallback
def test_models_with_the_oneDNN_ops_forced_off_equal_the_fused_ones(monkeypatch):
    """With the private ops reported missing, the optimized Swin and Swin-Unet still run their tiled paths, on the
    public ops, and give the fused paths' results."""
    fast, _ = _pair()
    unet = optimize(_slim_unet().eval())
    x, slices = torch.randn(1, 3, 90, 130), torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        fused = fast.eval()(x), unet(slices)
        assert fused_linear._PACKED  # the fused path ran
        fused_linear.clear_packed_weights()
        monkeypatch.setattr(fused_linear, "fused_ops_work", lambda dtype: False)
        public = fast(x), unet(slices)
    assert not fused_linear._PACKED  # nothing packed: the public path ran
    for a, b in zip(fused[0], public[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[1], public[1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- inference mode
def test_inference_mode_then_training():
    """Masks and indices cached under torch.inference_mode() must not break a later training step."""
    model = optimize(SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), frozen_stages=1))
    x = torch.randn(1, 3, 64, 80)
    with torch.inference_mode():
        model.eval()(x)
    outs = model.train()(x)
    sum(o.mean() for o in outs).backward()
    assert model.stages[1].blocks[1].attn.relative_position_bias_table.grad is not None


def test_model_built_under_inference_mode():
    """Parameters made under torch.inference_mode() have no version counter: nothing is cached on them (packed
    weights, folded masks), and in-place updates made there still show."""
    torch.manual_seed(0)
    reference = optimize(SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)).eval())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected = reference(x)
    with torch.inference_mode():
        model = optimize(SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)).eval())
        model.load_state_dict(reference.state_dict())
        got = model(x)
        attn = model.stages[0].blocks[1].attn
        attn.relative_position_bias_table.add_(torch.randn_like(attn.relative_position_bias_table))
        attn.qkv.weight.mul_(2)
        updated = model(x)
    with torch.no_grad():
        reference.stages[0].blocks[1].attn.load_state_dict(attn.state_dict())
        expected_updated = reference(x)
    assert type(attn) is FastWindowAttention and type(model.stages[0].blocks[1]) is FastSwinBlock
    assert max((a - b).abs().max().item() for a, b in zip(got, expected)) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(updated, expected_updated)) < 1e-5
    assert not torch.allclose(updated[0], got[0])
    assert attn.qkv not in fused_linear._PACKED and attn not in accel_swin._FOLDED
