"""Whole RPN checkpoints -> a densekit ``RPN``: mmdetection, torchvision Faster R-CNN or densekit layout.

``load_detector_checkpoint(model, path)`` is what ``densekit.apis.init_model`` and
``tools/convert.py SRC DST --config configs/rpn_*.py`` load RPN checkpoints with::

    read_whole_checkpoint(path)         any checkpoint file -> (state dict, dataset_meta), 'module.' removed
    detect_detector_layout(sd)          'torchvision' | 'mmdet' | 'densekit'
    convert_detector_state_dict(...)    torchvision: TORCHVISION_RULES; mmdet: the backbone part as
                                        ``convert.segmentor`` converts mmseg backbones (a timm backbone's
                                        keys gain ``model.``), neck and head as they are
    convert_and_load(...)               strict (fit_segmentor_state_dict), as for segmentors

Layouts (the neck and head names of densekit are mmdetection 3.x's):

- mmdetection ``rpn_r50_fpn_1x_coco``: ``backbone.conv1/bn1/layer1..4`` (torchvision ResNet names, which are
  timm's too), ``neck.lateral_convs.i.conv``, ``neck.fpn_convs.i.conv``, ``rpn_head.rpn_conv/rpn_cls/rpn_reg``.
- torchvision ``fasterrcnn_resnet50_fpn``: ``backbone.body.*`` (the ResNet), ``backbone.fpn.inner_blocks.i(.0)``
  (lateral 1x1), ``backbone.fpn.layer_blocks.i(.0)`` (output 3x3), ``rpn.head.conv(.0.0)``,
  ``rpn.head.cls_logits``, ``rpn.head.bbox_pred``; ``roi_heads.*`` (the second stage) is dropped. Pretrained
  torchvision detectors use FrozenBatchNorm2d, which has no ``num_batches_tracked`` (allowed missing).
  torchvision's per-location anchor order is mmdetection's (ratios 0.5, 1, 2 for one scale: both build
  ``w_ratios[:, None] * scales[None, :]`` ratio-major), so the ``A`` objectness channels and the ``A x 4``
  delta channels map one to one; the anchors themselves differ slightly (torchvision rounds the base anchors),
  see tests/heads/test_rpn_head.py.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from . import detect_layout
from .common import CheckpointError, Rule, StateDict, apply_rules
from .segmentor import SegmentorReport, _convert_backbone, convert_and_load, read_whole_checkpoint

DETECTOR_LAYOUTS = ("torchvision", "mmdet", "densekit")

# torchvision Faster R-CNN -> densekit RPN. The ``(\.0)?`` groups: torchvision >= 0.13 wraps the FPN and RPN
# convs in ``Conv2dNormActivation`` (``inner_blocks.0.0``, ``conv.0.0``); older releases stored bare convs.
TORCHVISION_RULES: tuple[Rule, ...] = (
    Rule(r"^backbone\.body\.", "backbone.model.", why="ResNet body"),
    Rule(r"^backbone\.fpn\.inner_blocks\.(\d+)(\.0)?\.", r"neck.lateral_convs.\1.conv.", why="FPN lateral 1x1"),
    Rule(r"^backbone\.fpn\.layer_blocks\.(\d+)(\.0)?\.", r"neck.fpn_convs.\1.conv.", why="FPN output 3x3"),
    Rule(r"^rpn\.head\.conv(\.0)?(\.0)?\.", "rpn_head.rpn_conv.", why="RPN shared 3x3"),
    Rule(r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls.", why="objectness, one per anchor"),
    Rule(r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg.", why="deltas, 4 per anchor"),
    Rule(r"^roi_heads\.", None, why="Faster R-CNN's second stage, not part of an RPN"),
)


def detect_detector_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'torchvision'`` (``rpn.head.*``), ``'mmdet'`` or ``'densekit'`` (``rpn_head.*``, told apart by the
    backbone part); a checkpoint without RPN head keys is refused, naming its first keys."""
    keys = list(state_dict)
    if any(key.startswith("rpn.head.") for key in keys):
        return "torchvision"
    if not any(key.startswith("rpn_head.") for key in keys):
        kind = "a segmentor" if any(key.startswith("decode_head.") for key in keys) else "not an RPN"
        raise CheckpointError(f"{kind} checkpoint: no rpn_head.* (mmdet, densekit) or rpn.head.* (torchvision) "
                              f"keys; first keys: {keys[:5]}")
    backbone = {key[len("backbone."):]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    try:  # a Swin: densekit's own layout, or mmdet's (= mmseg's)
        return "densekit" if detect_layout(backbone) == "densekit" else "mmdet"
    except CheckpointError:  # a timm backbone: densekit keeps it under backbone.model
        return "densekit" if any(key.startswith("model.") for key in backbone) else "mmdet"


def _convert_mmdet_backbone(state_dict: StateDict, backbone: nn.Module, report: SegmentorReport) -> StateDict:
    """``backbone.*`` of an mmdet detector -> densekit keys: Swin through the mmseg/official converters (mmdet's
    Swin is mmseg's), a timm backbone's torchvision-named keys under ``backbone.model.``."""
    from ..backbones.swin import SwinTransformer

    if isinstance(backbone, SwinTransformer):
        return _convert_backbone(state_dict, backbone, report)
    report.backbone_layout = "mmdet"
    return {"backbone.model." + key[len("backbone."):]: value
            for key, value in state_dict.items() if key.startswith("backbone.")}


def convert_detector_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                                layout: str | None = None) -> tuple[StateDict, SegmentorReport]:
    """Rename a whole-RPN state dict into ``model``'s keys (not yet checked against the model).

    Args:
        state_dict: unwrapped (``read_segmentor_checkpoint``).
        model: the target ``RPN``; its backbone type picks the mmdet backbone converter.
        layout: one of ``DETECTOR_LAYOUTS``; None detects it.

    Returns:
        ``(converted, report)`` with ``layout``, ``backbone_layout``, ``renamed`` and ``dropped`` filled in.
    """
    layout = layout or detect_detector_layout(state_dict)
    if layout not in DETECTOR_LAYOUTS:
        raise ValueError(f"unknown detector layout {layout!r}; expected one of {DETECTOR_LAYOUTS}")
    report = SegmentorReport(layout=layout, kind="RPN")
    if layout == "torchvision":
        converted, rule_report = apply_rules(state_dict, TORCHVISION_RULES)
        report.dropped += [(key, TORCHVISION_RULES[-1].why) for key in rule_report.dropped]  # roi_heads only
        report.backbone_layout = "torchvision"
        report.renamed = len(rule_report.renamed)
        return converted, report
    if layout == "mmdet":
        converted = _convert_mmdet_backbone(dict(state_dict), model.backbone, report)
    else:
        converted = _convert_backbone(dict(state_dict), model.backbone, report)
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            continue
        if key.startswith("data_preprocessor."):
            report.dropped.append((key, "taken from the config"))
            continue
        converted[key] = value
    sources = {id(value): key for key, value in state_dict.items()}
    report.renamed = sum(sources.get(id(value), key) != key for key, value in converted.items())
    return converted, report


def load_detector_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping, source: str = "",
                             bias_resize: str = "bicubic", unsafe_load: bool = False) -> SegmentorReport:
    """Load a whole RPN checkpoint (mmdet, torchvision Faster R-CNN or densekit layout) into ``model``, strictly.

    Args:
        model: the target ``densekit.models.rpn.RPN``.
        checkpoint: a file path, or a checkpoint already in memory.
        source: where it came from, for messages (defaults to the path).
        bias_resize: for Swin bias tables of another window.
        unsafe_load: unpickle a ``.pth`` fully (``weights_only=False``); only for files you trust.

    Returns:
        The report (``kind='RPN'``), with ``dataset_meta`` from the checkpoint if any.

    Raises:
        FileNotFoundError, CheckpointError: unreadable file, not an RPN checkpoint, or keys that do not fit
            the config's model (named, with a hint where the cause is known).
    """
    state_dict, meta, source = read_whole_checkpoint(checkpoint, source, unsafe_load)
    return convert_and_load(model, state_dict, convert_detector_state_dict, source, meta, bias_resize)


__all__ = ["DETECTOR_LAYOUTS", "TORCHVISION_RULES", "convert_detector_state_dict", "detect_detector_layout",
           "load_detector_checkpoint"]
