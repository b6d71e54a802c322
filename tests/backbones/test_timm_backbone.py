"""TimmBackbone: shapes at any size, agreement with timm, local pretrained loading, options."""
from __future__ import annotations

import functools

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from densekit.backbones.base import output_size
from densekit.backbones.timm_backbone import TimmBackbone, is_timm_model
from densekit.convert import CheckpointError

MODELS = ["convnext_tiny", "convnext_small", "convnext_base", "regnetx_032", "regnety_040", "resnet18", "resnet50",
          "resnet101", "swin_tiny_patch4_window7_224"]
SIZES = [(512, 512), (333, 517)]
# Every listed model at both sizes (the foundation issue's acceptance); model-major so each is built once.
SHAPE_CASES = [pytest.param(n, s, id=f"{n}-{s[0]}x{s[1]}") for n in MODELS for s in SIZES]


@functools.lru_cache(maxsize=1)  # cases are model-major: each model is built once, one held at a time
def _backbone(name: str) -> TimmBackbone:
    """An eval-mode backbone shared by the size cases of one model (building takes up to seconds)."""
    return TimmBackbone(name).eval()


@pytest.mark.parametrize(("name", "size"), SHAPE_CASES)
def test_shapes_any_size(name: str, size: tuple[int, int]) -> None:
    backbone = _backbone(name)
    h, w = size
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, h, w))
    assert backbone.strides == [4, 8, 16, 32]
    assert len(feats) == len(backbone.out_channels) == 4
    for feat, channels, stride in zip(feats, backbone.out_channels, backbone.strides):
        assert feat.shape == (1, channels, output_size(h, stride), output_size(w, stride))
        assert torch.isfinite(feat).all()


@pytest.mark.parametrize(("name", "indices"), [("resnet50", [1, 2, 3, 4]), ("convnext_tiny", [0, 1, 2, 3])])
def test_matches_timm_forward_intermediates(name: str, indices: list[int]) -> None:
    """At 224x224 nothing is padded or cropped: the maps are timm's own, level selection included."""
    reference = timm.create_model(name, num_classes=0).eval()
    backbone = TimmBackbone(name).eval()
    missing, _ = backbone.model.load_state_dict(reference.state_dict(), strict=False)
    assert not missing
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=indices, intermediates_only=True)
        feats = backbone(x)
    assert backbone.out_channels == [f.shape[1] for f in expected]
    for feat, ref in zip(feats, expected):
        torch.testing.assert_close(feat, ref)


def test_swin_no_wraparound_at_odd_sizes() -> None:
    """Stage-0 top-left features must not see the bottom of the image: timm's own window padding (a
    16x16 grid is no multiple of 7) lets the shifted windows wrap around, TimmBackbone's input padding not."""
    backbone = TimmBackbone("swin_tiny_patch4_window7_224", out_indices=(0,)).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    backbone(x)[0][0, :, 0, 0].sum().backward()
    influence = x.grad[0].abs().sum(dim=(0, 2))  # per input row
    assert influence[:8].sum() > 0
    assert influence[32:].max() < 1e-6 * influence.max()


@pytest.mark.parametrize(("name", "suffix"), [
    ("resnet18", ".pth"), ("resnet18", ".safetensors"), ("resnet18", "_mmengine.pth"),
    ("swin_tiny_patch4_window7_224", ".safetensors"),
])
def test_pretrained_local_file(name: str, suffix: str, tmp_path, no_network) -> None:
    """A full ImageNet-style checkpoint (head included) loads into the headless, pruned backbone."""
    source = timm.create_model(name)
    with torch.no_grad():  # non-default values everywhere, so a skipped key cannot match by chance
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(-1, 1)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"meta": {}, "state_dict": state} if "mmengine" in suffix else state, path)
    loaded = TimmBackbone(name, pretrained=str(path)).model.state_dict()
    assert len(loaded) > 50
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


def test_pretrained_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        TimmBackbone("resnet18", pretrained=str(path))


class _Payload:
    """Any object that is not a tensor: unpickling it could run code, so weights-only loading refuses it."""


def test_pretrained_pickle_payload_is_refused_naming_the_file(tmp_path) -> None:
    path = tmp_path / "resnet18_payload.pth"
    torch.save({"state_dict": timm.create_model("resnet18").state_dict(), "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*resnet18_payload\.pth") as caught:
        TimmBackbone("resnet18", pretrained=str(path))
    assert "_Payload" in str(caught.value) and "re-save just its state dict" in str(caught.value)


def test_in_chans_one(tmp_path) -> None:
    """Random init takes 1-channel input; a 3-channel checkpoint is adapted by timm (RGB weights summed)."""
    source = timm.create_model("resnet18")
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    backbone = TimmBackbone("resnet18", pretrained=str(path), in_chans=1).eval()
    torch.testing.assert_close(backbone.model.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    with torch.no_grad():
        feats = backbone(torch.randn(1, 1, 65, 97))
    assert [f.shape[-2:] for f in feats] == [(17, 25), (9, 13), (5, 7), (3, 4)]


@pytest.mark.parametrize(("name", "stages", "frozen", "trainable"), [
    ("resnet18", 2, ["conv1", "bn1", "layer1", "layer2"], ["layer3", "layer4"]),
    ("swin_tiny_patch4_window7_224", 1, ["patch_embed", "layers.0"], ["layers.1", "layers.3"]),
    ("convnext_tiny", 0, ["stem"], ["stages.0", "stages.3"]),
])
def test_frozen_stages(name: str, stages: int, frozen: list[str], trainable: list[str]) -> None:
    """mmseg semantics: the stem and the first ``stages`` stages stop learning and stay in eval mode."""
    backbone = TimmBackbone(name, frozen_stages=stages)
    backbone.train()
    for prefix, wanted in [(p, False) for p in frozen] + [(p, True) for p in trainable]:
        module = backbone.model.get_submodule(prefix)
        assert all(p.requires_grad == wanted for p in module.parameters()), prefix
        assert all(m.training == wanted for m in module.modules()), prefix


def test_frozen_stages_keep_batchnorm_statistics() -> None:
    backbone = TimmBackbone("resnet18", frozen_stages=1).train()
    frozen, trained = backbone.model.layer1[0].bn1, backbone.model.layer2[0].bn1
    before = frozen.running_mean.clone(), trained.running_mean.clone()
    with torch.no_grad():
        backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(frozen.running_mean, before[0])
    assert not torch.equal(trained.running_mean, before[1])


@pytest.mark.parametrize("norm_eval", [True, False])
def test_norm_eval(norm_eval: bool) -> None:
    backbone = TimmBackbone("resnet18", norm_eval=norm_eval).train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.training != norm_eval for m in norms)
    assert backbone.training and backbone.model.layer1.training
    before = norms[0].running_mean.clone()
    with torch.no_grad():
        backbone(torch.randn(2, 3, 64, 64))
    assert torch.equal(norms[0].running_mean, before) == norm_eval


def test_with_cp_recomputes_and_matches_gradients() -> None:
    """Checkpointed blocks run again in backward, and the gradients (behind a frozen stem) are unchanged."""
    plain = TimmBackbone("resnet18", frozen_stages=1)
    ckpt = TimmBackbone("resnet18", frozen_stages=1, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)  # no requires_grad: a reentrant checkpoint would drop the grads
    calls = []
    for backbone in (plain, ckpt):
        count = [0]  # a pre-hook: non-reentrant recomputation may stop before a block's forward returns
        backbone.model.layer3[0].register_forward_pre_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
        sum(f.square().mean() for f in backbone(x)).backward()
        calls.append(count[0])
    assert calls == [1, 2]
    grads = [dict((k, p.grad) for k, p in b.named_parameters() if p.requires_grad) for b in (plain, ckpt)]
    assert "model.layer2.0.conv1.weight" in grads[0] and "model.layer1.0.conv1.weight" not in grads[0]
    for key, grad in grads[0].items():
        assert grad is not None and torch.isfinite(grad).all(), key
        torch.testing.assert_close(grads[1][key], grad, msg=key)


def test_out_indices_subset_prunes() -> None:
    backbone = TimmBackbone("resnet18", out_indices=(0, 1)).eval()
    assert backbone.out_channels == [64, 128] and backbone.strides == [4, 8]
    assert not any(k.startswith(("model.layer3", "model.layer4", "model.fc")) for k in backbone.state_dict())
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 50, 70))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 13, 18), (1, 128, 7, 9)]


def test_features_only_fallback(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model without forward_intermediates goes through timm's feature wrapper (NHWC for Swin)."""
    name = "swin_tiny_patch4_window7_224"
    reference = TimmBackbone(name, out_indices=(0, 1)).eval()
    path = tmp_path / "swin.pth"
    torch.save(reference.model.state_dict(), path)
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        expected = reference(x)
        monkeypatch.delattr(timm.models.swin_transformer.SwinTransformer, "forward_intermediates")
        fallback = TimmBackbone(name, pretrained=str(path), out_indices=(0, 1), frozen_stages=1).eval()
        feats = fallback(x)
    assert not fallback.uses_intermediates
    assert not any(p.requires_grad for p in fallback.model.get_submodule("layers_0").parameters())
    assert len(feats) == len(expected) == 2
    for feat, ref in zip(feats, expected):
        torch.testing.assert_close(feat, ref)


def test_rejects_bad_models_and_arguments() -> None:
    assert is_timm_model("resnet50") and is_timm_model("resnet50.a1_in1k")
    assert not is_timm_model("swin_t_not_in_timm")
    with pytest.raises(ValueError, match="not a timm model"):
        TimmBackbone("swin_t_not_in_timm")
    with pytest.raises(ValueError, match="strides"):
        TimmBackbone("vit_tiny_patch16_224")  # single-scale: no stride 4/8/32 levels
    with pytest.raises(ValueError, match="out_indices"):
        TimmBackbone("resnet18", out_indices=(2, 1))
