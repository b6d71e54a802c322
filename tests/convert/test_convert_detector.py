"""RPN key tables (densekit.convert.detect / whole / torchvision / mmdet): layouts told apart and renamed, on
mmdetection's real 2.x and 3.x names (tests/mmdet_rpn_layout.py) and torchvision's. Loading into a densekit
RPN, and its outputs against the source's: tests/inference/test_checkpoint_rpn.py."""
from __future__ import annotations

import pytest
import torch
import torchvision
from mmdet_rpn_layout import rpn_r50_fpn_state_dict

from densekit.convert import CheckpointError
from densekit.convert.detect import detect_detector_layout
from densekit.convert.whole import convert_detector


def _densekit_name(mmdet_key: str) -> str:
    """Written out independently of the converter: densekit's TimmBackbone holds the ResNet as ``model``, and
    densekit's RPN head is ``rpn_head`` (mmdet 2.x's name)."""
    if mmdet_key.startswith("backbone."):
        return "backbone.model." + mmdet_key[len("backbone."):]
    if mmdet_key.startswith("bbox_head."):
        return "rpn_head." + mmdet_key[len("bbox_head."):]
    return mmdet_key


@pytest.mark.parametrize("head", ["bbox_head", "rpn_head"], ids=["mmdet3", "mmdet2"])
def test_mmdet_rpn_layouts_are_detected_and_renamed(head):
    state = rpn_r50_fpn_state_dict(head)
    assert detect_detector_layout(state) == "mmdet"
    converted, report = convert_detector(state, backbone="timm")
    assert (report.kind, report.layout, report.backbone_layout) == ("RPN", "mmdet", "mmdet")
    assert converted.keys() == {_densekit_name(key) for key in state}
    assert all(converted[_densekit_name(key)] is value for key, value in state.items())
    assert dict(report.renamed) == {key: _densekit_name(key) for key in state if _densekit_name(key) != key}
    assert not report.dropped


def test_mmdet3_second_stage_is_dropped_with_its_reason():
    state = rpn_r50_fpn_state_dict("bbox_head")
    state["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
    _, report = convert_detector(state, backbone="timm")
    assert report.dropped == [("roi_head.bbox_head.fc_cls.weight", "Faster R-CNN's second stage, not part of an RPN")]


def test_torchvision_and_densekit_layouts():
    torchvision_keys = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = torchvision_keys.state_dict()
    assert detect_detector_layout(state) == "torchvision"
    converted, report = convert_detector(state, backbone="timm")
    assert report.layout == "torchvision" and "rpn_head.rpn_cls.weight" in converted
    assert {key.split(".")[0] for key, _ in report.dropped} == {"roi_heads"}
    densekit_state = {_densekit_name(k): v for k, v in rpn_r50_fpn_state_dict("bbox_head").items()}
    assert detect_detector_layout(densekit_state) == "densekit"


def test_wrong_checkpoints_are_refused_by_name():
    t = torch.zeros(1)
    with pytest.raises(CheckpointError, match="a segmentor checkpoint: no rpn_head"):
        detect_detector_layout({"backbone.model.conv1.weight": t, "decode_head.conv_seg.weight": t})
    with pytest.raises(CheckpointError, match=r"not an RPN checkpoint.*bbox_head\.rpn_\* \(mmdet 3\.x\)"):
        detect_detector_layout({"backbone.conv1.weight": t, "bbox_head.retina_cls.weight": t})
