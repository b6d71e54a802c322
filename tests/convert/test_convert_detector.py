"""RPN key tables (densekit.convert.detect / whole / torchvision / mmdet): layouts told apart and renamed, on
mmdetection's real 2.x and 3.x names (tests/mmdet_rpn_layout.py) and torchvision's. Loading into a densekit
RPN, and its outputs against the source's: tests/inference/test_checkpoint_rpn.py."""
from __future__ import annotations

import pytest
import torch
import torchvision
from mmdet_rpn_layout import resnet50_shapes, rpn_r50_fpn_state_dict

from densekit.convert import CheckpointError
from densekit.convert.detect import detect_detector_layout
from densekit.convert.whole import convert_detector

# mmdetection 3.3's key names, written from its module definitions (not from densekit's keys), weights and biases:
# FPN (mmdet/models/necks/fpn.py): lateral_convs / fpn_convs are mmcv ConvModules, the conv is ``.conv``.
MMDET_FPN_KEYS = [f"neck.{convs}.{i}.conv.{p}" for convs in ("lateral_convs", "fpn_convs") for i in range(4)
                  for p in ("weight", "bias")]
# RPN detector (mmdet/models/detectors/rpn.py, a SingleStageDetector): its RPNHead is saved as ``bbox_head``.
MMDET3_RPN_HEAD_KEYS = ["bbox_head.rpn_conv.weight", "bbox_head.rpn_conv.bias", "bbox_head.rpn_cls.weight",
                        "bbox_head.rpn_cls.bias", "bbox_head.rpn_reg.weight", "bbox_head.rpn_reg.bias"]
# Two-stage detectors (mmdet/models/detectors/two_stage.py): ``rpn_head`` beside ``roi_head``, whose
# Shared2FCBBoxHead (roi_heads/bbox_heads/convfc_bbox_head.py) is shared_fcs.{0,1}, fc_cls, fc_reg.
FASTER_RCNN_RPN_HEAD_KEYS = ["rpn_head.rpn_conv.weight", "rpn_head.rpn_conv.bias", "rpn_head.rpn_cls.weight",
                             "rpn_head.rpn_cls.bias", "rpn_head.rpn_reg.weight", "rpn_head.rpn_reg.bias"]
FASTER_RCNN_ROI_SHAPES = {"roi_head.bbox_head.shared_fcs.0.weight": (1024, 256 * 7 * 7),
                          "roi_head.bbox_head.shared_fcs.0.bias": (1024,),
                          "roi_head.bbox_head.shared_fcs.1.weight": (1024, 1024),
                          "roi_head.bbox_head.shared_fcs.1.bias": (1024,),
                          "roi_head.bbox_head.fc_cls.weight": (81, 1024), "roi_head.bbox_head.fc_cls.bias": (81,),
                          "roi_head.bbox_head.fc_reg.weight": (320, 1024), "roi_head.bbox_head.fc_reg.bias": (320,)}
# Single-stage detectors hold their head as ``bbox_head`` too: RetinaHead (dense_heads/retina_head.py) is
# cls_convs / reg_convs (4 ConvModules each), retina_cls, retina_reg: no RPN in it.
RETINA_HEAD_KEYS = [f"bbox_head.{convs}.{i}.conv.{p}" for convs in ("cls_convs", "reg_convs") for i in range(4)
                    for p in ("weight", "bias")] + ["bbox_head.retina_cls.weight", "bbox_head.retina_cls.bias",
                                                     "bbox_head.retina_reg.weight", "bbox_head.retina_reg.bias"]


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


def test_the_layout_helper_holds_mmdetections_literal_neck_and_head_keys():
    """tests/mmdet_rpn_layout.py (which the loaders' tests use) against the key lists written out above."""
    for head, head_keys in (("bbox_head", MMDET3_RPN_HEAD_KEYS), ("rpn_head", FASTER_RCNN_RPN_HEAD_KEYS)):
        state = rpn_r50_fpn_state_dict(head)
        assert {k for k in state if not k.startswith("backbone.")} == {*MMDET_FPN_KEYS, *head_keys}
        assert len(state) - len(MMDET_FPN_KEYS) - len(head_keys) == len(resnet50_shapes())


def test_an_mmdet3_faster_rcnn_file_gives_its_rpn_and_drops_the_second_stage():
    state = rpn_r50_fpn_state_dict("rpn_head")
    state.update({key: torch.zeros(shape) for key, shape in FASTER_RCNN_ROI_SHAPES.items()})
    assert detect_detector_layout(state) == "mmdet"
    converted, report = convert_detector(state, backbone="timm")
    assert {k for k in converted if not k.startswith("backbone.model.")} == {*MMDET_FPN_KEYS,
                                                                               *FASTER_RCNN_RPN_HEAD_KEYS}
    assert dict(report.dropped) == {key: "Faster R-CNN's second stage, not part of an RPN"
                                    for key in FASTER_RCNN_ROI_SHAPES}


def test_a_single_stage_detector_head_is_refused_not_taken_for_an_rpn():
    state = {key: torch.zeros(1) for key in [*resnet50_shapes(), *MMDET_FPN_KEYS, *RETINA_HEAD_KEYS]}
    with pytest.raises(CheckpointError, match=r"not an RPN checkpoint.*bbox_head\.rpn_\* \(mmdet 3\.x\)"):
        detect_detector_layout(state)
