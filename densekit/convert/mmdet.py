"""mmdetection RPN checkpoints (2.x and 3.x) -> a densekit ``RPN``'s keys.

mmdetection 3.3's ``RPN`` detector (``mmdet/models/detectors/rpn.py``) holds its ``RPNHead`` as ``bbox_head``
and renames 2.x's ``rpn_head.*`` to it on load (``_load_from_state_dict``); its ``RPNHead``
(``mmdet/models/dense_heads/rpn_head.py``, ``num_convs=1``) is ``rpn_conv`` (3x3, ReLU after it), ``rpn_cls``
and ``rpn_reg`` (1x1). ``rpn_r50_fpn_1x_coco`` keys::

    backbone.conv1, backbone.bn1, backbone.layer{1-4}.{j}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}
    neck.lateral_convs.{i}.conv, neck.fpn_convs.{i}.conv        (mmcv ConvModule: the conv is .conv)
    bbox_head.rpn_conv, bbox_head.rpn_cls, bbox_head.rpn_reg    (mmdet 2.x: rpn_head.*)

densekit's neck and head names are mmdetection's (``neck.*``, ``rpn_head.*``). mmdet's ResNet names are
torchvision's, which timm's ResNet shares: a densekit ``TimmBackbone`` holds them under ``backbone.model.``.
mmdet's Swin is mmseg's, converted as segmentor backbones are (``convert.whole``). A two-stage detector's
``roi_head.*`` is dropped, as torchvision's ``roi_heads.*`` is.
"""
from __future__ import annotations

from .rules import Rule

# Everything but the backbone, for mmdet (2.x and 3.x) and densekit RPN checkpoints alike.
MMDET_RULES: tuple[Rule, ...] = (
    Rule(r"^bbox_head\.", "rpn_head.", why="mmdet 3.x's RPN holds its RPNHead as bbox_head"),
    Rule(r"^roi_head\.", None, why="Faster R-CNN's second stage, not part of an RPN"),
    Rule(r"^data_preprocessor\.", None, why="taken from the config"),
)
# mmdet's torchvision-named ResNet (any non-Swin backbone) -> densekit's TimmBackbone, which holds it as ``model``.
MMDET_TIMM_BACKBONE_RULES: tuple[Rule, ...] = (
    Rule(r"^backbone\.", "backbone.model.", why="densekit's TimmBackbone holds the timm model as .model"),
)
