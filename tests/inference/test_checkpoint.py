"""Whole-model checkpoints (densekit.inference.checkpoint, convert_files): UPerNet in the mmseg layout (round trip),
HuggingFace files (Swin, ConvNeXt), official Swin-Unet files, the tool, clear failures. RPNs: test_checkpoint_rpn.py.

Models are Swin-T / ConvNeXt-T backbones with a slim head (32 channels, 5 classes) and random weights
whose norms and BatchNorm statistics are moved off their initial values; logits are compared at
256x256 (the 512x512 HF parity of the full-width model is in tests/models/test_segmentor.py).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tools import load_tool
from hf_upernet_reference import hf_upernet, randomize
from safetensors.torch import save_file
from swin2mmseg_reference import swin2mmseg
from swin_unet_reference import T_BACKBONE
from torch import nn

from densekit.apis import build_model, init_model, load_config
from densekit.convert import CheckpointError, densekit_to_mmseg
from densekit.convert.detect import detect_segmentor_layout
from densekit.convert.hf import convert_hf_upernet
from densekit.convert.io import read_model_checkpoint
from densekit.convert.official_swin import densekit_to_official
from densekit.convert.swin_unet import densekit_to_official as swin_unet_to_official
from densekit.inference.checkpoint import load_model_checkpoint
from densekit.inference.convert_files import convert_segmentor_file
from densekit.models import SwinUnet

# The configs say SyncBN, as the recipes do; outside distributed runs it builds BatchNorm2d with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:norm='SyncBN' outside distributed training")
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
STAGES = ["stage1", "stage2", "stage3", "stage4"]
CLASSES = ["sky", "tree", "road", "grass", "water"]
DEPTHS = (2, 2, 6, 2)

CONFIG = """
default_scope = "densekit"
num_classes = {num_classes}
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor"),
    backbone={backbone},
    decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], channels=32, num_classes=num_classes,
                     norm="SyncBN"),
    auxiliary_head={aux},
    test_cfg=dict(mode="whole"),
)
"""
AUX = 'dict(type="FCNHead", in_channels=384, in_index=2, channels=16, num_classes=num_classes, norm="SyncBN")'
SWIN = 'dict(type="swin_t", drop_path_rate=0.2, pretrained="does/not/exist.pth")'  # never read: pretrained=None
CONVNEXT = 'dict(type="convnext_tiny", out_norm=True)'


def write_config(path: Path, backbone: str = SWIN, num_classes: int = 5, aux: bool = True) -> Path:
    path.write_text(CONFIG.format(backbone=backbone, num_classes=num_classes, aux=AUX if aux else "None"))
    return path


def fresh(config: Path) -> nn.Module:
    """The config's model as ``init_model`` builds it for a checkpoint (backbone ``pretrained`` skipped)."""
    return build_model(load_config(str(config)), pretrained=False).eval()


def logits(model: nn.Module, size: int = 256) -> torch.Tensor:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x, mode="tensor")


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    return dict(swin=write_config(root / "swin.py"), convnext=write_config(root / "convnext.py", CONVNEXT),
                swin_no_aux=write_config(root / "swin_no_aux.py", aux=False),
                swin_150=write_config(root / "swin_150.py", num_classes=150),
                convnext_no_norm=write_config(root / "convnext_no_norm.py", 'dict(type="convnext_tiny")'))


@pytest.fixture(scope="module")
def source(configs):
    """A densekit segmentor with random weights: what the mmseg-layout checkpoints are made from."""
    torch.manual_seed(0)
    return randomize(fresh(configs["swin"]), classifier_scale=0.5)


# ------------------------------------------------------------------------------ mmseg layout
def mmseg_state_dict(model: nn.Module, backbone_layout: str = "mmseg") -> dict[str, torch.Tensor]:
    """An mmseg ``upernet_swin`` state dict made from a densekit one by mmseg's own swin2mmseg (official ->
    mmseg), plus ``norm0..3`` and the ``relative_position_index`` buffers mmseg stores; ``'official'`` gives
    the Swin-Transformer-Semantic-Segmentation fork's layout (official names plus ``norm0..3``)."""
    state = model.state_dict()
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    official = densekit_to_official(backbone)
    official.pop("norm.weight"), official.pop("norm.bias")
    if backbone_layout == "mmseg":
        converted = swin2mmseg(official)
    else:
        converted = {f"backbone.{k}": v for k, v in official.items()}
    stages = "stages" if backbone_layout == "mmseg" else "layers"
    attn = "attn.w_msa" if backbone_layout == "mmseg" else "attn"
    for i, depth in enumerate(DEPTHS):
        converted[f"backbone.norm{i}.weight"] = backbone[f"out_norms.{i}.weight"]
        converted[f"backbone.norm{i}.bias"] = backbone[f"out_norms.{i}.bias"]
        for j in range(depth):
            converted[f"backbone.{stages}.{i}.blocks.{j}.{attn}.relative_position_index"] = torch.zeros(49, 49).long()
    converted.update({k: v for k, v in state.items() if not k.startswith("backbone.")})
    return converted


def test_swin2mmseg_reference_agrees_with_densekit_inverse_rules(source):
    """The test's mmseg state dict (mmseg's converter) is what densekit's own inverse rules give."""
    reference = mmseg_state_dict(source)
    backbone = {k[len("backbone."):]: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    ours = {f"backbone.{k}": v for k, v in densekit_to_mmseg(backbone).items()}
    ours.update({k: v for k, v in reference.items() if not k.startswith("backbone.") or "relative_position" in k})
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    heads = [k for k in source.state_dict() if not k.startswith("backbone.")]
    assert heads and all(k in reference for k in heads)  # head names are mmseg's: nothing to rename


def test_mmseg_checkpoint_round_trip_gives_identical_logits(source, configs, tmp_path):
    src = tmp_path / "upernet_swin_tiny_ade20k.pth"
    meta = {"mmseg_version": "1.2.2", "dataset_meta": {"classes": CLASSES, "palette": [[0, 0, 0]] * 5}}
    torch.save({"meta": meta, "state_dict": mmseg_state_dict(source)}, src)
    dst = tmp_path / "converted.pth"
    report = convert_segmentor_file(src, dst, configs["swin"])
    assert (report.layout, report.backbone_layout) == ("mmseg", "mmseg")
    assert len(report.permuted) == 9  # 3 patch mergings: reduction, norm weight and bias
    assert {why for _, why in report.dropped} == {"backbone buffer, recomputed"}
    assert not report.missing

    saved = torch.load(dst, map_location="cpu", weights_only=True)
    assert saved["meta"]["dataset_meta"]["classes"] == CLASSES and saved["meta"]["layout"] == "mmseg"
    assert saved["state_dict"].keys() == source.state_dict().keys()
    model = init_model(configs["swin"], str(dst), accel=False)  # the exact path: conversion is lossless
    assert model.dataset_meta["classes"] == CLASSES
    assert torch.equal(logits(model, 128), logits(source, 128))


def test_official_fork_layout_and_mmseg0_meta(source, configs):
    """Swin-Transformer-Semantic-Segmentation: official backbone names plus norm0..3; mmseg 0.x CLASSES meta."""
    checkpoint = {"meta": {"CLASSES": tuple(CLASSES), "PALETTE": [(1, 2, 3)] * 5},
                  "state_dict": {f"module.{k}": v for k, v in mmseg_state_dict(source, "official").items()}}
    model = fresh(configs["swin"])
    report = load_model_checkpoint(model, checkpoint)
    assert (report.layout, report.backbone_layout) == ("mmseg", "official")
    assert report.dataset_meta == {"classes": CLASSES, "palette": [[1, 2, 3]] * 5}
    assert torch.equal(logits(model, 96), logits(source, 96))


def test_densekit_checkpoint_is_loaded_as_is(source, configs, tmp_path):
    path = tmp_path / "densekit.pth"
    torch.save({"meta": {"dataset_meta": {"classes": CLASSES}}, "state_dict": source.state_dict()}, path)
    state_dict, meta = read_model_checkpoint(path)
    assert detect_segmentor_layout(state_dict) == "densekit" and meta == {"classes": CLASSES}
    model = init_model(configs["swin"], str(path))
    assert model.load_report.layout == "densekit" and model.load_report.renamed == []
    assert not model.load_report.dropped and not model.load_report.missing


# ------------------------------------------------------------------------------ HuggingFace
def _hf_fixture(kind: str) -> tuple[nn.Module, torch.Tensor]:
    model = hf_upernet(kind, num_labels=5, hidden_size=32, auxiliary_channels=16,
                       id2label=dict(enumerate(CLASSES)), classifier_scale=0.5)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.decode_head(model.backbone(x).feature_maps)
    return model, expected


@pytest.fixture(scope="module")
def hf_swin():
    """HF UperNet-Swin-T and its decode-head logits at 256x256 (before HF's upsampling)."""
    return _hf_fixture("swin")


@pytest.fixture(scope="module")
def hf_convnext():
    """HF UperNet-ConvNeXt-T and its decode-head logits at 256x256 (before HF's upsampling)."""
    return _hf_fixture("convnext")


@pytest.mark.parametrize("kind", ["swin", "convnext"])
def test_hf_file_converts_to_hf_logits(kind, request, configs, tmp_path):
    model, expected = request.getfixturevalue(f"hf_{kind}")
    state_dict = model.state_dict()
    if kind == "swin":
        src = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(src))
    else:
        src = tmp_path / "pytorch_model.bin"
        torch.save(state_dict, src)
    dst = tmp_path / "converted.safetensors"
    report = convert_segmentor_file(src, dst, configs[kind])
    assert (report.layout, report.backbone_layout) == ("hf", f"hf-{kind}")
    expected_drops = ["backbone.swin.layernorm.bias", "backbone.swin.layernorm.weight"] if kind == "swin" else []
    assert sorted(key for key, _ in report.dropped) == expected_drops
    diff = (logits(init_model(configs[kind], str(dst))) - expected).abs().max().item()
    print(f"\nHF {kind} -> densekit via {src.suffix}: max abs diff {diff:.2e}")
    assert expected.abs().max() > 1 and diff < TOL


def test_hf_save_pretrained_folder_gives_class_names(hf_swin, configs, tmp_path):
    model, _ = hf_swin
    model.save_pretrained(tmp_path)
    segmentor = init_model(configs["swin"], str(tmp_path))
    assert segmentor.dataset_meta == {"classes": CLASSES}
    converted, _ = convert_hf_upernet(model.state_dict())
    loaded = segmentor.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in converted.items())


def test_hf_convnext_without_out_norm_fails_with_the_fix(hf_convnext, configs):
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys.*backbone\.out_norms\.0.*out_norm=True"):
        load_model_checkpoint(fresh(configs["convnext_no_norm"]), hf_convnext[0].state_dict())


def test_auxiliary_head_absent_on_either_side_is_explained(hf_swin, configs):
    state_dict = hf_swin[0].state_dict()
    report = load_model_checkpoint(fresh(configs["swin_no_aux"]), state_dict)
    assert any(key.startswith("auxiliary_head.") and "no auxiliary_head" in why for key, why in report.dropped)
    without_aux = {k: v for k, v in state_dict.items() if not k.startswith("auxiliary_head.")}
    report = load_model_checkpoint(fresh(configs["swin"]), without_aux)
    assert report.missing and all(key.startswith("auxiliary_head.") for key, _ in report.missing)


def test_misfits_name_the_keys(source, configs):
    state = dict(source.state_dict())
    model = fresh(configs["swin"])
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys.*decode_head\.extra\.weight \(3,\)"):
        load_model_checkpoint(model, {**state, "decode_head.extra.weight": torch.zeros(3)})
    del state["decode_head.fpn_bottleneck.conv.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys.*decode_head\.fpn_bottleneck\.conv\.weight"):
        load_model_checkpoint(model, state)
    with pytest.raises(CheckpointError, match=r"(?s)decode_head\.conv_seg\.weight: checkpoint \(5, 32, 1, 1\), "
                                              r"model \(150, 32, 1, 1\).*num_classes"):
        load_model_checkpoint(fresh(configs["swin_150"]), source.state_dict())
    with pytest.raises(CheckpointError, match="no decode_head"):
        load_model_checkpoint(model, {k: v for k, v in source.state_dict().items() if k.startswith("backbone.")})


# ------------------------------------------------------------------------------ the tool
def test_tool_converts_a_whole_segmentor(hf_swin, configs, tmp_path, capsys):
    model = hf_swin[0]
    src, dst = tmp_path / "upernet.pth", tmp_path / "out" / "upernet_densekit.pth"
    torch.save({"state_dict": model.state_dict()}, src)
    command = [sys.executable, str(REPO / "tools" / "convert.py"), str(src), str(dst), "--config", str(configs["swin"])]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hf segmentor, hf-swin backbone" in proc.stdout and f"wrote {dst}" in proc.stdout
    assert sorted(p.name for p in dst.parent.iterdir()) == [dst.name]  # no temporary file left
    saved = torch.load(dst, map_location="cpu", weights_only=True)
    assert saved["meta"]["layout"] == "hf" and saved["meta"]["config"] == str(configs["swin"])
    converted, _ = convert_hf_upernet(model.state_dict())
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in converted.items())

    tool = load_tool()
    assert tool.main([str(src), str(tmp_path / "x.pth"), "--config", str(configs["swin_150"])]) == 1
    err = capsys.readouterr().err
    assert "conv_seg" in err and "num_classes" in err and not (tmp_path / "x.pth").exists()
    for extra in (["--verify"], ["--model", "swin_t"]):
        with pytest.raises(SystemExit) as exit_info:
            tool.parse_args([str(src), str(dst), "--config", str(configs["swin"]), *extra])
        assert exit_info.value.code == 2
    assert "--verify only appl" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Swin-Unet
def test_loader_dispatches_official_swin_unet(official_t, official_t_pth):
    """``init_model`` / ``tools/convert.py --config`` load through ``load_model_checkpoint``: an official
    Swin-Unet file goes to the Swin-Unet key tables and loads every weight."""
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3), decode_head=dict(num_classes=9))
    report = load_model_checkpoint(model, official_t_pth)
    assert report.layout == "official" and not report.missing and report.dataset_meta == {}
    expected = swin_unet_to_official(model.state_dict())
    assert all(torch.equal(v, official_t.state_dict()[k]) for k, v in expected.items())


def test_tool_converts_an_official_checkpoint_for_the_synapse_config(official_t, official_t_pth, tmp_path, grey_image):
    """``tools/convert.py SRC DST --config configs/swin_unet_t_synapse.py``; ``init_model`` then gives the
    official logits."""
    dst = tmp_path / "swin_unet_synapse.pth"
    options = ["--cfg-options", "model.backbone.in_chans=3"]
    result = subprocess.run([sys.executable, "tools/convert.py", str(official_t_pth), str(dst), "--config",
                             "configs/swin_unet_t_synapse.py", *options], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    model = init_model(str(REPO / "configs" / "swin_unet_t_synapse.py"), str(dst),
                       cfg_options={"model.backbone.in_chans": 3})
    image = grey_image.expand(-1, 3, -1, -1)
    with torch.no_grad():
        diff = (model(image, mode="tensor") - official_t(image)).abs().max().item()
    assert diff < TOL
