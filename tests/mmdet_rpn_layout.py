"""mmdetection's ``rpn_r50_fpn_1x_coco`` state-dict layout, written from mmdetection 3.3's module names (not from
densekit's state dict): the tests of the RPN converters build their "mmdetection checkpoints" from it.

    backbone  mmdet/models/backbones/resnet.py   ResNet(depth=50): conv1, bn1 (norm1_name 'bn1'),
              layer{1-4}.{j}.Bottleneck{conv1, bn1, conv2, bn2, conv3, bn3}, downsample = Sequential(conv, bn)
    neck      mmdet/models/necks/fpn.py          FPN: lateral_convs.{i} / fpn_convs.{i} are mmcv ConvModules,
              whose conv is ``.conv`` (bias on: no norm); num_outs=5 adds P6 by max pooling (no weights)
    head      mmdet/models/dense_heads/rpn_head.py   RPNHead(num_convs=1): rpn_conv = Conv2d(3x3, padding 1),
              rpn_cls = Conv2d(1x1, A), rpn_reg = Conv2d(1x1, 4A) (use_sigmoid: one score per anchor)
    detector  mmdet/models/detectors/rpn.py      3.x: the head is ``bbox_head``; 2.x: ``rpn_head``
"""
from __future__ import annotations

import torch

BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)  # Bottleneck planes; outputs are 4x
FPN_IN = (256, 512, 1024, 2048)
FPN_OUT = 256
ANCHORS = 3  # scales [8] x ratios [0.5, 1, 2]


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """mmdet ``ResNet(depth=50)`` parameter and buffer shapes, keys under ``backbone.``."""
    shapes = {"backbone.conv1.weight": (64, 3, 7, 7), **_bn("backbone.bn1", 64)}
    in_ch = 64
    for stage, (blocks, planes) in enumerate(zip(BLOCKS, WIDTHS), start=1):
        for j in range(blocks):
            p = f"backbone.layer{stage}.{j}"
            shapes[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
            shapes.update(_bn(f"{p}.bn1", planes))
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_bn(f"{p}.bn2", planes))
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes.update(_bn(f"{p}.bn3", planes * 4))
            if j == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, in_ch, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * 4))
            in_ch = planes * 4
    return shapes


def rpn_r50_fpn_shapes(head: str = "bbox_head") -> dict[str, tuple[int, ...]]:
    """The whole ``rpn_r50_fpn_1x_coco`` state dict's shapes; ``head`` is ``'bbox_head'`` (3.x) or ``'rpn_head'``."""
    shapes = resnet50_shapes()
    for i, channels in enumerate(FPN_IN):
        shapes[f"neck.lateral_convs.{i}.conv.weight"] = (FPN_OUT, channels, 1, 1)
        shapes[f"neck.lateral_convs.{i}.conv.bias"] = (FPN_OUT,)
        shapes[f"neck.fpn_convs.{i}.conv.weight"] = (FPN_OUT, FPN_OUT, 3, 3)
        shapes[f"neck.fpn_convs.{i}.conv.bias"] = (FPN_OUT,)
    shapes.update({f"{head}.rpn_conv.weight": (FPN_OUT, FPN_OUT, 3, 3), f"{head}.rpn_conv.bias": (FPN_OUT,),
                   f"{head}.rpn_cls.weight": (ANCHORS, FPN_OUT, 1, 1), f"{head}.rpn_cls.bias": (ANCHORS,),
                   f"{head}.rpn_reg.weight": (4 * ANCHORS, FPN_OUT, 1, 1), f"{head}.rpn_reg.bias": (4 * ANCHORS,)})
    return shapes


def rpn_r50_fpn_state_dict(head: str = "bbox_head", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in that layout: BatchNorm variances positive, step counters integers."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in rpn_r50_fpn_shapes(head).items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            out[key] = 0.1 * torch.randn(shape, generator=gen)
    return out
