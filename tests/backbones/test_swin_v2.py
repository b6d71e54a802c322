"""densekit's Swin V2: agreement with timm (at the trained window and at another), with HuggingFace
``Swinv2Backbone`` (at any size), SDPA vs reference attention (forward and gradients), the contract options."""
from __future__ import annotations

import pytest
import torch

import densekit
from densekit.backbones.pretrained import load_pretrained_v2
from densekit.backbones.swin_v2 import SwinTransformerV2

timm = pytest.importorskip("timm")
TOL = 1e-4


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Noisy norms, logit scales and biases, so a misplaced norm, a wrong clamp or a dropped bias shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn(param.shape, generator=gen))


def _max_diffs(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> list[float]:
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    return [float((o - t).abs().max()) for o, t in zip(ours, theirs)]


@pytest.fixture(scope="module")
def timm_weights() -> dict[str, torch.Tensor]:
    """A random, perturbed timm ``swinv2_tiny_window8_256`` state dict."""
    torch.manual_seed(0)
    model = timm.create_model("swinv2_tiny_window8_256", pretrained=False)
    _perturb(model)
    return model.state_dict()


def _timm_stages(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")


def test_timm_window8_256(timm_weights):
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
    reference.load_state_dict(timm_weights)
    ours = densekit.create_backbone("swinv2_t", window_size=8, out_norm=False).eval()
    load_pretrained_v2(ours, timm_weights, verbose=False)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diffs = _max_diffs(ours(x), _timm_stages(reference, x))
    print("timm 256 / window 8 max abs diffs", diffs)
    assert max(diffs) < TOL


def test_timm_window8_weights_at_window16_512(timm_weights):
    """The window-8 weights at window 16: coordinates normalised by the pretrained window, nothing resized."""
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=512, window_size=16,
                                  pretrained_window_sizes=(8, 8, 8, 8)).eval()
    missing, unexpected = reference.load_state_dict(timm_weights, strict=False)
    assert not unexpected and not [k for k in missing if "relative" not in k]
    ours = densekit.create_backbone("swinv2_t", window_size=16, pretrained_window_size=8, out_norm=False).eval()
    load_pretrained_v2(ours, timm_weights, verbose=False)
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diffs = _max_diffs(ours(x), _timm_stages(reference, x))
    print("timm 512 / window 16 from window 8 max abs diffs", diffs)
    assert max(diffs) < TOL


def _hf_backbone(size: tuple[int, int]):
    """HF fixes each stage's window and shift from ``config.image_size`` at construction (densekit and timm decide
    per input), so the reference is built for the size it is run at."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=list(size), embed_dim=32, depths=[2, 2, 2, 2],
                                       num_heads=[2, 4, 8, 16], window_size=8,
                                       out_features=["stage1", "stage2", "stage3", "stage4"])
    torch.manual_seed(3)
    model = transformers.Swinv2Backbone(config).eval()
    _perturb(model, seed=3)
    return model


@pytest.mark.parametrize("size", [(256, 256), (500, 375)])
def test_hf_swinv2_backbone(size):
    reference = _hf_backbone(size)
    ours = SwinTransformerV2(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), window_size=8,
                             out_norm=False).eval()
    report = load_pretrained_v2(ours, reference.state_dict(), verbose=False)
    assert report.layout == "hf" and not report.missing_weights()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        diffs = _max_diffs(ours(x), list(reference(x).feature_maps))
    print(f"HF Swinv2Backbone {size} max abs diffs", diffs)
    assert max(diffs) < TOL


def _slim(attn_impl: str, **kwargs) -> SwinTransformerV2:
    kwargs.setdefault("drop_path_rate", 0.0)
    return SwinTransformerV2(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), attn_impl=attn_impl,
                             **kwargs)


@pytest.mark.parametrize("size", [(100, 76), (256, 256), (61, 133)])
@pytest.mark.parametrize("window, pretrained_window", [(7, 0), (8, 6)])
def test_sdpa_matches_reference(size, window, pretrained_window):
    torch.manual_seed(5)
    reference = _slim("reference", window_size=window, pretrained_window_size=pretrained_window)
    _perturb(reference, seed=5)
    sdpa = _slim("sdpa", window_size=window, pretrained_window_size=pretrained_window)
    sdpa.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(6))
    outs = [model(x) for model in (reference, sdpa)]
    forward = max(_max_diffs([o.detach() for o in outs[1]], [o.detach() for o in outs[0]]))
    assert forward < TOL
    for out in outs:
        sum((o * torch.linspace(-1, 1, o.shape[1])[:, None, None]).sum() for o in out).backward()
    grads = dict(sdpa.named_parameters())
    worst = max(float((grads[n].grad - p.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12))
                for n, p in reference.named_parameters())
    print(f"sdpa vs reference {size} window {window}/{pretrained_window}: forward {forward:.2e}, "
          f"grads {worst:.2e} of each gradient's largest entry")
    for name, param in reference.named_parameters():
        assert param.grad is not None and grads[name].grad is not None, name
        assert torch.isfinite(grads[name].grad).all(), name
        assert torch.allclose(grads[name].grad, param.grad, atol=1e-4, rtol=1e-3), name


def test_presets_and_contract():
    for name, dim in [("swinv2_t", 96), ("swinv2_s", 96), ("swinv2_b", 128), ("swinv2_l", 192)]:
        model = densekit.create_backbone(name, out_indices=(1, 3))
        assert model.out_channels == [2 * dim, 8 * dim] and model.strides == [8, 32]
    model = densekit.create_backbone("swinv2_t", pretrained_window_size=(8, 8, 8, 6), in_chans=1, out_indices=(0, 2))
    assert [s.blocks[0].attn.pretrained_window_size for s in model.stages] == [8, 8, 8, 6]
    outs = model(torch.randn(1, 1, 61, 45))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 16, 12), (1, 384, 4, 3)]
    with pytest.raises(ValueError, match="pretrained_window_size"):
        densekit.create_backbone("swinv2_t", pretrained_window_size=(8, 8))
    with pytest.raises(ValueError, match="swinv2_tiny_patch4_window8_256.pth"):
        densekit.create_backbone("swinv2_t", pretrained=True)  # never downloads; names the file to fetch
    with pytest.raises(ValueError, match="attn_impl"):
        _slim("flash")
    with pytest.raises(ValueError, match="out_indices"):
        _slim("sdpa", out_indices=(4,))


def test_frozen_stages_norm_eval_drop_path():
    model = _slim("sdpa", frozen_stages=2, norm_eval=True, drop_path_rate=0.3).train()
    frozen = [model.patch_embed, model.stages[0], model.stages[1], model.out_norms["0"], model.out_norms["1"]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for m in frozen) and model.stages[2].training
    assert all(p.requires_grad for p in model.stages[2].parameters())
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks if hasattr(b.drop_path, "drop_prob")]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.3)


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(7)
    plain = _slim("sdpa", window_size=7)
    checkpointed = _slim("sdpa", window_size=7, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 70, 90)
    for model in (plain, checkpointed):
        sum(o.sum() for o in model(x)).backward()
    grads = dict(checkpointed.named_parameters())
    for name, param in plain.named_parameters():
        assert torch.allclose(param.grad, grads[name].grad, atol=1e-5), name
