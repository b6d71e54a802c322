"""torchvision Faster R-CNN (``fasterrcnn_resnet50_fpn``) -> a densekit ``RPN``'s keys.

torchvision: ``backbone.body.*`` (the ResNet), ``backbone.fpn.inner_blocks.i(.0)`` (lateral 1x1),
``backbone.fpn.layer_blocks.i(.0)`` (output 3x3), ``rpn.head.conv(.0.0)``, ``rpn.head.cls_logits``,
``rpn.head.bbox_pred``; ``roi_heads.*`` (the second stage) is dropped. Pretrained torchvision detectors use
FrozenBatchNorm2d, which has no ``num_batches_tracked`` (allowed missing, ``fit.whole_model_policy``).
torchvision's per-location anchor order is mmdetection's (ratios 0.5, 1, 2 for one scale: both build
``w_ratios[:, None] * scales[None, :]`` ratio-major), so the ``A`` objectness channels and the ``A x 4``
delta channels map one to one; the anchors themselves differ slightly (torchvision rounds the base anchors),
see tests/heads/test_rpn_head.py.
"""
from __future__ import annotations

from .report import LoadReport
from .rules import Rule, StateDict, Tensors, apply_rules

# The ``(\.0)?`` groups: torchvision >= 0.13 wraps the FPN and RPN convs in ``Conv2dNormActivation``
# (``inner_blocks.0.0``, ``conv.0.0``); older releases stored bare convs.
TORCHVISION_RULES: tuple[Rule, ...] = (
    Rule(r"^backbone\.body\.", "backbone.model.", why="ResNet body"),
    Rule(r"^backbone\.fpn\.inner_blocks\.(\d+)(\.0)?\.", r"neck.lateral_convs.\1.conv.", why="FPN lateral 1x1"),
    Rule(r"^backbone\.fpn\.layer_blocks\.(\d+)(\.0)?\.", r"neck.fpn_convs.\1.conv.", why="FPN output 3x3"),
    Rule(r"^rpn\.head\.conv(\.0)?(\.0)?\.", "rpn_head.rpn_conv.", why="RPN shared 3x3"),
    Rule(r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls.", why="objectness, one per anchor"),
    Rule(r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg.", why="deltas, 4 per anchor"),
    Rule(r"^roi_heads\.", None, why="Faster R-CNN's second stage, not part of an RPN"),
)


def torchvision_to_densekit(state_dict: Tensors) -> tuple[StateDict, LoadReport]:
    """A torchvision Faster R-CNN state dict -> densekit RPN keys (tensors shared); the second stage dropped."""
    out, report = apply_rules(state_dict, TORCHVISION_RULES)
    report.layout = report.backbone_layout = "torchvision"
    return out, report
