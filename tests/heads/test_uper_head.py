"""UPerHead and FCNHead: agreement with HuggingFace UperNet (Swin-T, ConvNeXt-T at 512x512), shapes, checks.

The parity tests build HF ``UperNetForSemanticSegmentation`` with random weights (BatchNorm statistics,
LayerNorms, Swin bias tables and ConvNeXt layer scales randomised so that a misplaced tensor shows),
convert its state dict with ``densekit.convert.hf`` and compare decode/auxiliary logits before
HF's final upsampling.
"""
from __future__ import annotations

import pytest
import torch
from hf_upernet_reference import STAGES, hf_upernet
from torch import nn

import densekit
from densekit.backbones import SwinTransformer
from densekit.convert.hf import convert_hf_upernet
from densekit.heads import FCNHead, UPerHead
from densekit.registry import MODELS

TOL = 1e-4


def _load(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    module.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}, strict=True)


@pytest.fixture(scope="module", params=["swin", "convnext"])
def upernet_pair(request):
    """HF UperNet and densekit backbone + UPerHead + FCNHead with converted weights, run once at 512x512."""
    kind = request.param
    hf = hf_upernet(kind)
    converted, unmapped = convert_hf_upernet(hf.state_dict())
    # HF normalises every returned map (hidden_states_norms): densekit's Swin has out norms by default,
    # its timm ConvNeXt with out_norm=True.
    options = dict(drop_path_rate=0.0) if kind == "swin" else dict(drop_path_rate=0.0, out_norm=True)
    backbone = densekit.create_backbone("swin_t" if kind == "swin" else "convnext_tiny", **options).eval()
    head = UPerHead(backbone.out_channels, channels=512, num_classes=150).eval()
    aux = FCNHead(384, channels=256, num_classes=150).eval()
    for module, prefix in ((backbone, "backbone."), (head, "decode_head."), (aux, "auxiliary_head.")):
        _load(module, converted, prefix)

    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hf.backbone(x, output_hidden_states=True)
        theirs = dict(features=out.feature_maps, logits=hf.decode_head(out.feature_maps),
                      aux=hf.auxiliary_head(out.feature_maps))
        features = backbone(x)
        ours = dict(features=features, logits=head(features), aux=aux(features))
    return kind, unmapped, ours, theirs


def test_converter_reports_unmapped_keys(upernet_pair):
    kind, unmapped, _, _ = upernet_pair
    if kind == "swin":  # HF's classifier norm, unused by a backbone
        assert unmapped == ["backbone.swin.layernorm.bias", "backbone.swin.layernorm.weight"]
    else:  # HF's ConvNextBackbone has no classifier norm; its per-stage norms map to out_norms
        assert unmapped == []


def test_converter_maps_convnext_stage_norms():
    transformers = pytest.importorskip("transformers")
    small = transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=STAGES)
    hf = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=small, num_labels=3, hidden_size=8, auxiliary_channels=8, auxiliary_in_channels=32))
    source = hf.state_dict()
    got, unmapped = convert_hf_upernet(source)
    assert unmapped == []
    for n, stage in enumerate(STAGES):
        for p in ("weight", "bias"):
            assert got[f"backbone.out_norms.{n}.{p}"] is source[f"backbone.hidden_states_norms.{stage}.{p}"]


def test_converter_accepts_transformers4_names():
    """Hub checkpoints saved before transformers 5 name Swin's attention ``self.query`` ... ``output.dense``."""
    transformers = pytest.importorskip("transformers")
    small = transformers.SwinConfig(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], out_features=STAGES)
    hf = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=small, num_labels=3, hidden_size=8, auxiliary_channels=8, auxiliary_in_channels=64))
    renames = [("backbone.swin.", "backbone."), ("attention.q_proj", "attention.self.query"),
               ("attention.k_proj", "attention.self.key"), ("attention.v_proj", "attention.self.value"),
               ("attention.relative_position_bias.relative_position_bias_table",
                "attention.self.relative_position_bias_table"),
               ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
               ("mlp.fc2", "output.dense")]
    old = {}
    for key, value in hf.state_dict().items():
        for new_name, old_name in renames:
            key = key.replace(new_name, old_name)
        old[key] = value
    old["backbone.encoder.layers.0.blocks.0.attention.self.relative_position_index"] = torch.zeros(49 * 49)
    expected, _ = convert_hf_upernet(hf.state_dict())
    got, unmapped = convert_hf_upernet(old)
    assert unmapped == ["backbone.layernorm.bias", "backbone.layernorm.weight"]
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    backbone = SwinTransformer(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
    _load(backbone, got, "backbone.")


def test_backbone_features_match_hf(upernet_pair):
    _, _, ours, theirs = upernet_pair
    for stride, a, b in zip((4, 8, 16, 32), ours["features"], theirs["features"]):
        assert a.shape == b.shape == (1, a.shape[1], 512 // stride, 512 // stride)
        assert (a - b).abs().max().item() < TOL


def test_uper_head_matches_hf_decode_head(upernet_pair):
    _, _, ours, theirs = upernet_pair
    assert ours["logits"].shape == theirs["logits"].shape == (1, 150, 128, 128)
    assert theirs["logits"].abs().max() > 1  # not a degenerate comparison
    assert (ours["logits"] - theirs["logits"]).abs().max().item() < TOL


def test_fcn_head_matches_hf_auxiliary_head(upernet_pair):
    _, _, ours, theirs = upernet_pair
    assert ours["aux"].shape == theirs["aux"].shape == (1, 150, 32, 32)
    assert (ours["aux"] - theirs["aux"]).abs().max().item() < TOL


def _features(channels=(16, 32, 64, 128), size=(61, 45), batch=2) -> list[torch.Tensor]:
    """Maps at strides 4..32 of an odd-sized image, as a backbone returns them."""
    h, w = size
    return [torch.randn(batch, c, -(-h // s), -(-w // s)) for c, s in zip(channels, (4, 8, 16, 32))]


def test_uper_head_shapes_and_backward():
    head = UPerHead([16, 32, 64, 128], channels=32, num_classes=5)
    feats = _features()
    logits = head(feats)
    assert logits.shape == (2, 5, 16, 12)
    assert head.forward_features(feats).shape == (2, 32, 16, 12)
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_uper_head_in_index_and_mmseg_names():
    head = UPerHead([32, 64, 128], channels=16, num_classes=3, in_index=(1, 2, 3), pool_scales=(1, 2))
    assert head(_features()).shape == (2, 3, 8, 6)
    keys = set(head.state_dict())
    for key in ("psp_modules.1.1.conv.weight", "psp_modules.1.1.bn.running_var", "bottleneck.conv.weight",
                "lateral_convs.1.bn.weight", "fpn_convs.1.conv.weight", "fpn_bottleneck.bn.bias",
                "conv_seg.weight", "conv_seg.bias"):
        assert key in keys
    assert "bottleneck.conv.bias" not in keys  # no conv bias before a norm
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1


def test_uper_head_channel_mismatch_names_the_level():
    head = UPerHead([16, 32, 64, 128], channels=8, num_classes=2)
    feats = _features(channels=(16, 32, 60, 128))
    with pytest.raises(ValueError, match=r"level 2: expected \(B, 64, H, W\).*got \(2, 60, 4, 3\)"):
        head(feats)
    with pytest.raises(ValueError, match=r"in_index=\[0, 1, 2, 3\] but got 3 feature maps"):
        head(feats[:3])


def test_fcn_head_variants():
    feats = _features()
    aux = FCNHead(64, channels=16, num_convs=2, concat_input=True, num_classes=4, dilation=2)
    assert aux(feats).shape == (2, 4, 4, 3)
    assert {"convs.0.conv.weight", "convs.1.bn.running_mean", "conv_cat.conv.weight"} <= set(aux.state_dict())
    identity = FCNHead(128, channels=128, num_convs=0, num_classes=4, in_index=3, dropout_ratio=0.0)
    assert identity(feats).shape == (2, 4, 2, 2) and identity.dropout is None
    with pytest.raises(ValueError, match="in_channels"):
        FCNHead(64, channels=16, num_convs=0)
    with pytest.raises(ValueError, match=r"in_index=2: expected \(B, 32, H, W\)"):
        FCNHead(32, channels=8)(feats)


def test_heads_build_from_registry():
    head = MODELS.build(dict(type="UPerHead", in_channels=[16, 32, 64, 128], channels=8, num_classes=2))
    aux = MODELS.build(dict(type="FCNHead", in_channels=64, channels=8, num_classes=2))
    assert isinstance(head, UPerHead) and isinstance(aux, FCNHead)
