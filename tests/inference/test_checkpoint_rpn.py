"""Whole RPN checkpoints into densekit's RPN (densekit.inference.checkpoint): torchvision Faster R-CNN and
mmdetection 2.x / 3.x layouts load exactly, and the head's outputs equal the source's.

Random-init weights saved in the source layout (no network): torchvision's ``fasterrcnn_resnet50_fpn`` with
randomised BatchNorm statistics; mmdetection's ``rpn_r50_fpn_1x_coco`` written from mmdetection 3.3's module
names (tests/mmdet_rpn_layout.py); mmdetection's Swin (mmseg's layout, swin2mmseg).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from mmdet_rpn_layout import rpn_r50_fpn_state_dict
from swin2mmseg_reference import swin2mmseg
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead

from densekit.apis import build_model, init_model, load_config
from densekit.convert import CheckpointError
from densekit.convert.detect import detect_detector_layout
from densekit.inference.checkpoint import load_model_checkpoint

ROOT = Path(__file__).resolve().parents[2]
R50_CONFIG = ROOT / "configs" / "rpn_r50_fpn_1x_coco.py"
SWIN_CONFIG = ROOT / "configs" / "rpn_swin_t_fpn_1x_coco.py"


def _fresh(config: Path, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(load_config(str(config)), pretrained=False).eval()


@pytest.fixture(scope="module")
def torchvision_rcnn() -> torch.nn.Module:
    """torchvision Faster R-CNN R50-FPN, random weights, BatchNorm statistics and affines moved off (0, 1)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def _torchvision_head_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list, list]:
    """torchvision's backbone + FPN ('0'..'3', 'pool') and RPN head on an already normalised batch."""
    with torch.no_grad():
        return model.rpn.head(list(model.backbone(x).values()))


@pytest.mark.parametrize("frozen_bn", [False, True], ids=["batchnorm", "frozen-batchnorm"])
def test_torchvision_faster_rcnn_rpn_loads_and_matches_its_head_outputs(torchvision_rcnn, tmp_path, frozen_bn):
    state = torchvision_rcnn.state_dict()
    if frozen_bn:  # pretrained torchvision detectors use FrozenBatchNorm2d: no step counters
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "fasterrcnn_resnet50_fpn.pth"
    torch.save(state, path)
    assert detect_detector_layout(state) == "torchvision"
    model = _fresh(R50_CONFIG, seed=1)
    report = load_model_checkpoint(model, path)
    assert report.layout == "torchvision" and report.loaded == len(model.state_dict()) - 53 * frozen_bn
    assert sorted({key.split(".")[0] for key, _ in report.dropped}) == ["roi_heads"]
    assert {why for _, why in report.missing} <= {"BatchNorm step counter, unused in inference"}
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        objectness, deltas = model(x, mode="tensor")
    tv_objectness, tv_deltas = _torchvision_head_outputs(torchvision_rcnn, x)
    assert len(objectness) == len(tv_objectness) == 5
    for ours, theirs in zip(objectness + deltas, tv_objectness + tv_deltas):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_convert_tool_writes_a_checkpoint_init_model_loads(torchvision_rcnn, tmp_path):
    src, dst = tmp_path / "tv.pth", tmp_path / "rpn_r50.pth"
    torch.save({"model": torchvision_rcnn.state_dict()}, src)  # detectron-style wrapper key
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), str(src), str(dst),
                             "--config", str(R50_CONFIG)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "torchvision RPN" in result.stdout and dst.is_file()
    model = init_model(str(R50_CONFIG), str(dst))
    assert model.load_report.layout == "densekit"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model(x, mode="tensor")[0][0]
    torch.testing.assert_close(ours, _torchvision_head_outputs(torchvision_rcnn, x)[0][0], rtol=0, atol=1e-5)


def _mmdet_name(densekit_key: str, head: str) -> str:
    """The mmdetection key of a densekit RPN key: mmdet's ResNet is ``backbone.X`` (densekit: ``backbone.model.X``)
    and its head ``bbox_head`` (3.x) or ``rpn_head`` (2.x)."""
    key = densekit_key.replace("backbone.model.", "backbone.", 1)
    return head + key[len("rpn_head"):] if key.startswith("rpn_head.") else key


@pytest.mark.parametrize("head", ["bbox_head", "rpn_head"], ids=["mmdet3", "mmdet2"])
def test_mmdet_rpn_r50_checkpoint_loads_bit_identical(tmp_path, head):
    """mmdetection's real rpn_r50_fpn_1x_coco names (3.x ``bbox_head.*``, 2.x ``rpn_head.*``): every densekit
    weight comes from its mmdetection key, nothing is left over."""
    mmdet_state = rpn_r50_fpn_state_dict(head, seed=3)
    path = tmp_path / "rpn_r50_fpn_1x_coco_20200218-5525fa2e.pth"
    torch.save({"meta": {"mmdet_version": "3.3.0", "dataset_meta": {"classes": ["object"]}},
                "state_dict": mmdet_state}, path)
    model = init_model(str(R50_CONFIG), str(path))
    assert model.load_report.layout == "mmdet" and model.dataset_meta == {"classes": ["object"]}
    assert not model.load_report.missing and not model.load_report.dropped
    state = model.state_dict()
    assert {_mmdet_name(key, head) for key in state} == set(mmdet_state)
    for key, value in state.items():
        assert torch.equal(value, mmdet_state[_mmdet_name(key, head)]), key


def test_mmdet3_head_outputs_equal_an_independent_rpn_head(tmp_path):
    """The converted head equals torchvision's RPNHead (conv3x3 + ReLU, then 1x1 objectness and 1x1 deltas)
    given mmdetection 3.x's ``bbox_head`` weights, on every FPN level."""
    mmdet_state = rpn_r50_fpn_state_dict("bbox_head", seed=6)
    model = _fresh(R50_CONFIG, seed=7)
    load_model_checkpoint(model, {"state_dict": mmdet_state})
    reference = TorchvisionRPNHead(256, 3).eval()
    with torch.no_grad():
        reference.conv[0][0].weight.copy_(mmdet_state["bbox_head.rpn_conv.weight"])
        reference.conv[0][0].bias.copy_(mmdet_state["bbox_head.rpn_conv.bias"])
        for ours, theirs in (("rpn_cls", reference.cls_logits), ("rpn_reg", reference.bbox_pred)):
            theirs.weight.copy_(mmdet_state[f"bbox_head.{ours}.weight"])
            theirs.bias.copy_(mmdet_state[f"bbox_head.{ours}.bias"])
    gen = torch.Generator().manual_seed(8)
    features = [torch.randn(2, 256, size, size + 3, generator=gen) for size in (32, 16, 8, 4, 2)]
    with torch.no_grad():
        objectness, deltas = model.rpn_head(features)
        ref_objectness, ref_deltas = reference(features)
    for ours, theirs in zip(objectness + deltas, ref_objectness + ref_deltas):
        assert ours.shape == theirs.shape and theirs.abs().max() > 0.1
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_convert_tool_accepts_an_mmdet3_rpn_checkpoint(tmp_path):
    """``tools/convert.py SRC DST --config configs/rpn_r50_fpn_1x_coco.py`` on an mmdetection 3.x file."""
    src, dst = tmp_path / "rpn_mmdet3.pth", tmp_path / "rpn_densekit.pth"
    mmdet_state = rpn_r50_fpn_state_dict("bbox_head", seed=9)
    torch.save({"meta": {"mmdet_version": "3.3.0"}, "state_dict": mmdet_state}, src)
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "convert.py"), str(src), str(dst),
                             "--config", str(R50_CONFIG)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "mmdet RPN" in result.stdout and dst.is_file()
    saved = torch.load(dst, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(saved["rpn_head.rpn_reg.weight"], mmdet_state["bbox_head.rpn_reg.weight"])


def test_mmdet_swin_rpn_checkpoint_converts_the_backbone(official_state_dict, tmp_path):
    """mmdet's Swin is mmseg's layout (swin2mmseg, norm0..3): converted as segmentor backbones are."""
    source = _fresh(SWIN_CONFIG, seed=4)
    # mmdet's SwinTransformer has norm0..3 (one per output) instead of the classifier's final norm.
    mmdet_state = {k: v for k, v in swin2mmseg(official_state_dict).items() if not k.startswith("backbone.norm.")}
    for i, channels in enumerate((96, 192, 384, 768)):
        mmdet_state[f"backbone.norm{i}.weight"] = torch.rand(channels) + 0.5
        mmdet_state[f"backbone.norm{i}.bias"] = torch.randn(channels)
    mmdet_state.update({k: v for k, v in source.state_dict().items() if not k.startswith("backbone.")})
    model = _fresh(SWIN_CONFIG, seed=5)
    report = load_model_checkpoint(model, {"state_dict": mmdet_state})
    assert report.layout == "mmdet" and report.backbone_layout == "mmseg"
    expected = mmdet_state["backbone.stages.0.blocks.0.attn.w_msa.qkv.weight"]
    assert torch.equal(model.state_dict()["backbone.stages.0.blocks.0.attn.qkv.weight"], expected)
    assert torch.equal(model.state_dict()["backbone.out_norms.3.bias"], mmdet_state["backbone.norm3.bias"])
    assert torch.equal(model.state_dict()["rpn_head.rpn_reg.weight"], source.state_dict()["rpn_head.rpn_reg.weight"])


def test_wrong_checkpoints_are_refused_by_name(tmp_path):
    model = _fresh(R50_CONFIG)
    segmentor = {"backbone.model.conv1.weight": torch.zeros(1), "decode_head.conv_seg.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="a segmentor checkpoint: no rpn_head"):
        load_model_checkpoint(model, {"state_dict": segmentor})
    state = model.state_dict()
    state["rpn_head.rpn_cls.weight"] = torch.zeros(9, 256, 1, 1)  # 9 anchors per location, config has 3
    with pytest.raises(CheckpointError, match=r"rpn_head.rpn_cls.weight: checkpoint \(9, 256, 1, 1\)(.|\n)*scales"):
        load_model_checkpoint(model, {"state_dict": state})
