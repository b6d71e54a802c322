"""Swin V2 checkpoints in every layout (official, timm, HF Swinv2Model / image classifier, densekit) load through
``pretrained=`` with the same stage outputs; V1 files are refused by V2 models and V2 files by V1 models."""
from __future__ import annotations

import re

import pytest
import torch

import densekit
from densekit.backbones.pretrained import load_pretrained_v2
from densekit.backbones.swin_v2 import SwinTransformerV2
from densekit.convert.report import CheckpointError
from densekit.convert.swin_v2 import convert_swin_v2, detect_v2_layout

timm = pytest.importorskip("timm")
SLIM = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=8)


def _timm_slim() -> torch.nn.Module:
    from timm.models.swin_transformer_v2 import SwinTransformerV2 as TimmV2

    torch.manual_seed(0)
    model = TimmV2(img_size=64, **SLIM).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    return model


def _to_official(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm V2 keys -> the official release's: merging back to the end of the previous stage, ``head``, and the
    buffers official files carry."""
    out = {}
    for key, value in timm_sd.items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        out[key.replace("head.fc.", "head.")] = value
        if key.endswith("attn.logit_scale"):
            prefix = key[: -len("logit_scale")]
            out[prefix + "relative_coords_table"] = torch.zeros(1, 15, 15, 2)
            out[prefix + "relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
            out[prefix.replace(".attn.", ".") + "attn_mask"] = torch.zeros(4, 64, 64)
    return out


def _stages(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(x)


def test_timm_and_official_files(tmp_path):
    reference = _timm_slim()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    timm_file, official_file = tmp_path / "timm.pth", tmp_path / "official.pth"
    torch.save(reference.state_dict(), timm_file)
    torch.save({"model": _to_official(reference.state_dict())}, official_file)
    for path, layout in [(timm_file, "timm"), (official_file, "official")]:
        model = SwinTransformerV2(**SLIM, out_indices=(0, 1), out_norm=False, pretrained=str(path)).eval()
        for ours, theirs in zip(_stages(model, x), expected):
            assert (ours - theirs).abs().max() < 1e-5, layout
    official = _to_official(reference.state_dict())
    assert detect_v2_layout(official) == "official"
    _, report = convert_swin_v2(official, "official")
    dropped = {key for key, _ in report.dropped}
    assert "layers.0.blocks.1.attn.relative_coords_table" in dropped
    assert "layers.0.blocks.1.attn.relative_position_index" in dropped
    assert "layers.0.blocks.1.attn_mask" in dropped and "head.weight" in dropped


def test_swinv2_t_preset_loads_a_timm_file(tmp_path):
    torch.manual_seed(1)
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
    path = tmp_path / "swinv2_tiny_window8_256.pth"
    torch.save(reference.state_dict(), path)
    model = densekit.create_backbone("swinv2_t", pretrained=str(path), out_norm=False).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    for ours, theirs in zip(_stages(model, x), expected):
        assert (ours - theirs).abs().max() < 1e-4


def _hf_pair():
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=64, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=8,
                                       out_features=["stage1", "stage2"])
    torch.manual_seed(2)
    classifier = transformers.Swinv2ForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in classifier.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    backbone = transformers.Swinv2Backbone(config).eval()
    missing, _ = backbone.load_state_dict(
        {k.removeprefix("swinv2."): v for k, v in classifier.state_dict().items()}, strict=False)
    assert not missing
    return classifier, backbone


def test_hf_model_and_classifier_files(tmp_path):
    classifier, backbone = _hf_pair()
    x = torch.randn(1, 3, 64, 64)  # the config's size: HF fixes windows and shifts from it
    with torch.no_grad():
        expected = backbone(x).feature_maps
    model_file, classifier_file = tmp_path / "hf_model.bin", tmp_path / "hf_classifier.bin"
    torch.save(classifier.swinv2.state_dict(), model_file)
    torch.save(classifier.state_dict(), classifier_file)
    for path in (model_file, classifier_file):
        model = SwinTransformerV2(**SLIM, out_indices=(0, 1), out_norm=False, pretrained=str(path)).eval()
        for ours, theirs in zip(_stages(model, x), expected):
            assert (ours - theirs).abs().max() < 1e-5, path.name
    sd = classifier.state_dict()
    converted, report = convert_swin_v2(sd, detect_v2_layout(sd))
    assert report.layout == "hf" and "out_norms.1.weight" in converted
    assert torch.equal(converted["stages.0.blocks.0.attn.q_bias"],
                       sd["swinv2.encoder.layers.0.blocks.0.attention.self.query.bias"])


def test_densekit_file_round_trip(tmp_path):
    torch.manual_seed(3)
    model = SwinTransformerV2(**SLIM, out_indices=(0, 1)).eval()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, tmp_path / "densekit.pth")
    loaded = SwinTransformerV2(**SLIM, out_indices=(0, 1), pretrained=str(tmp_path / "densekit.pth")).eval()
    x = torch.randn(1, 3, 40, 56)
    for a, b in zip(_stages(model, x), _stages(loaded, x)):
        assert torch.equal(a, b)


def test_v1_and_v2_files_refused_across(tmp_path):
    v1 = densekit.create_backbone("swin_t")
    torch.save(v1.state_dict(), tmp_path / "swin_v1.pth")
    with pytest.raises(CheckpointError, match="Swin V1 checkpoint.*this model is Swin V2"):
        densekit.create_backbone("swinv2_t", pretrained=str(tmp_path / "swin_v1.pth"))
    torch.save(_timm_slim().state_dict(), tmp_path / "swin_v2.pth")
    with pytest.raises(CheckpointError, match="Swin V2 checkpoint.*this model is Swin V1"):
        densekit.create_backbone("swin_t", pretrained=str(tmp_path / "swin_v2.pth"))


def test_report_names_the_windows(tmp_path):
    path = tmp_path / "swinv2_slim_patch4_window8_64.pth"
    torch.save(_timm_slim().state_dict(), path)
    model = SwinTransformerV2(**{**SLIM, "window_size": 16}, out_indices=(0, 1))
    report = load_pretrained_v2(model, str(path), verbose=False)
    assert "window 16" in report.windows and "pretrained_window_size=8" in report.windows
    assert "windows: window 16" in report.summary()
    model = SwinTransformerV2(**{**SLIM, "window_size": 16}, pretrained_window_size=8, out_indices=(0, 1))
    report = load_pretrained_v2(model, str(path), verbose=False)
    assert report.windows == "window 16, position-bias coordinates normalised by pretrained windows (8, 8)"


def test_convert_tool_writes_a_v2_file(tmp_path):
    from densekit.cli.convert import main

    src, dst = tmp_path / "swinv2_tiny_window8_256.pth", tmp_path / "swinv2_t.safetensors"
    torch.manual_seed(4)
    full = timm.create_model("swinv2_tiny_window8_256", pretrained=False)
    torch.save({"model": _to_official(full.state_dict())}, src)
    assert main([str(src), str(dst), "--model", "swinv2_t", "--verify"]) == 0
    written = densekit.create_backbone("swinv2_t", pretrained=str(dst)).state_dict()
    assert torch.equal(written["stages.2.blocks.5.attn.cpb_mlp.2.weight"],
                       full.state_dict()["layers.2.blocks.5.attn.cpb_mlp.2.weight"])
