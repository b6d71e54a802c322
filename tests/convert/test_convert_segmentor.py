"""Whole-segmentor layouts (densekit.convert.detect): told apart by their keys, unsupported ones refused by name.
Loading into a densekit UPerNet: tests/inference/test_checkpoint.py."""
from __future__ import annotations

import pytest
import torch

from densekit.convert import CheckpointError
from densekit.convert.detect import detect_segmentor_layout


def test_segmentor_layouts_are_detected():
    t = torch.zeros(1)
    head = {"decode_head.conv_seg.weight": t}
    assert detect_segmentor_layout({"backbone.embeddings.norm.weight": t, **head}) == "hf"
    assert detect_segmentor_layout({"backbone.stages.0.blocks.0.attn.w_msa.qkv.weight": t, **head}) == "mmseg"
    assert detect_segmentor_layout({"backbone.layers.0.blocks.0.attn.qkv.weight": t,
                                    "backbone.layers.0.downsample.reduction.weight": t, **head}) == "mmseg"
    assert detect_segmentor_layout({"backbone.stages.0.blocks.0.attn.qkv.weight": t, **head}) == "densekit"
    assert detect_segmentor_layout({"backbone.model.stem.0.weight": t, **head}) == "densekit"  # a timm backbone
    with pytest.raises(CheckpointError, match="no decode_head"):
        detect_segmentor_layout({"backbone.stages.0.blocks.0.attn.qkv.weight": t})


def test_mmseg_convnext_layout_is_detected():
    # Refused until mmpretrain's ConvNeXt layout was converted (tests/convert/test_convert_convnext.py).
    keys = ("backbone.downsample_layers.0.0.weight", "backbone.stages.0.0.depthwise_conv.weight",
            "decode_head.conv_seg.weight")
    state_dict = {key: torch.zeros(1) for key in keys}
    assert detect_segmentor_layout(state_dict) == "mmseg"
