"""timm and official Swin checkpoints load into densekit's Swin and reproduce timm's features."""
from __future__ import annotations

import pytest
import torch

import densekit
from densekit.convert import CheckpointError, detect_layout, load_pretrained


def max_diffs(got: list[torch.Tensor], expected: list[torch.Tensor]) -> list[float]:
    assert [g.shape for g in got] == [e.shape for e in expected]
    return [float((g - e).abs().max()) for g, e in zip(got, expected)]


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_timm_checkpoint_matches_timm_features(fmt, request, image, timm_features):
    """Acceptance A: timm weights (.pth and .safetensors) give timm's intermediates within 1e-4."""
    path = request.getfixturevalue(f"timm_{fmt}")
    model = densekit.create_backbone("swin_t", pretrained=str(path), out_norm=False).eval()
    with torch.no_grad():
        diffs = max_diffs(model(image), timm_features)
    assert max(diffs) < 1e-4, diffs


def test_official_checkpoint_matches_timm_features(official_pth, image, timm_features):
    """{'model': sd} with relative_position_index / attn_mask buffers and a head loads and matches timm."""
    model = densekit.create_backbone("swin_t", out_norm=False).eval()
    report = load_pretrained(model, official_pth, verbose=False)
    assert report.layout == "official"
    assert {"head.weight", "head.bias", "norm.weight"} <= set(report.dropped)  # no out norms in this model
    assert "layers.0.blocks.1.attn_mask" in report.dropped
    assert "layers.2.blocks.5.attn.relative_position_index" in report.dropped
    assert ("layers.0.downsample.reduction.weight", "stages.0.downsample.reduction.weight") in report.renamed
    assert report.missing == [] and report.resized == []
    with torch.no_grad():
        diffs = max_diffs(model(image), timm_features)
    assert max(diffs) < 1e-4, diffs


def test_timm_report_and_final_norm(dk_model, timm_pth, timm_state_dict):
    """timm's final norm lands in out_norms.3; out_norms.0-2 are reported missing, not an error."""
    report = load_pretrained(dk_model, timm_pth, verbose=False)
    assert report.layout == "timm"
    assert ("norm.weight", "out_norms.3.weight") in report.renamed
    assert ("layers.1.downsample.reduction.weight", "stages.0.downsample.reduction.weight") in report.renamed
    assert report.dropped == ["head.fc.weight", "head.fc.bias"]
    assert report.missing == [f"out_norms.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert report.loaded == len(timm_state_dict) - 2
    assert torch.equal(dk_model.out_norms["3"].weight, timm_state_dict["norm.weight"])
    reduction = timm_state_dict["layers.3.downsample.reduction.weight"]
    assert torch.equal(dk_model.stages[2].downsample.reduction.weight, reduction)
    summary = report.summary()
    assert "timm layout" in summary and "missing 6" in summary and "dropped 2" in summary


def test_detect_layout(timm_state_dict, official_state_dict):
    headless_timm = {k: v for k, v in timm_state_dict.items() if not k.startswith("head")}
    headless_official = {k: v for k, v in official_state_dict.items() if not k.startswith("head")}
    assert detect_layout(timm_state_dict) == "timm"
    assert detect_layout(headless_timm) == "timm"
    assert detect_layout(official_state_dict) == "official"
    assert detect_layout(headless_official) == "official"
    t = torch.zeros(1)
    assert detect_layout({"stages.0.blocks.0.attn.w_msa.qkv.weight": t}) == "mmseg"
    assert detect_layout({"patch_embed.projection.weight": t, "stages.0.blocks.0.norm1.weight": t}) == "mmseg"
    assert detect_layout({"stages.0.blocks.0.attn.qkv.weight": t}) == "densekit"
    with pytest.raises(CheckpointError, match="V2"):
        detect_layout({"layers.0.blocks.0.attn.cpb_mlp.0.weight": t})
    with pytest.raises(CheckpointError, match="known layout"):
        detect_layout({"conv1.weight": t})
