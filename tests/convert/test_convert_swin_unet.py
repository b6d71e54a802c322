"""Swin-Unet key tables (densekit.convert.swin_unet): official <-> densekit, wrappers, ImageNet mirroring's keys.

Loading into a model (official logits, mirroring checked against the official ``load_from``) is tested in
tests/backbones/test_pretrained.py and tests/inference/test_checkpoint.py.
"""
from __future__ import annotations

import re

import torch

from densekit.convert.io import strip_prefixes
from densekit.convert.swin_unet import (
    SWIN_UNET_PREFIXES,
    convert_swin_unet,
    densekit_to_official,
    imagenet_to_swin_unet,
    official_to_densekit,
)

_BUFFER = re.compile(r"(relative_position_index|attn_mask)$")


def test_checkpoint_wrappers_and_round_trip(official_t):
    """Plain, DataParallel (``module.swin_unet.``) and ``{'model': ...}``-wrapped checkpoints convert alike;
    densekit -> official is the inverse on every non-buffer key."""
    state_dict = official_t.state_dict()
    plain, report = official_to_densekit(state_dict)
    parallel, _ = official_to_densekit({f"module.{k}": v for k, v in state_dict.items()})
    assert plain.keys() == parallel.keys()
    assert len(report.dropped) == sum(1 for k in state_dict if _BUFFER.search(k))
    back = densekit_to_official(plain)
    assert back.keys() == {k for k in state_dict if not _BUFFER.search(k)}
    assert all(back[k] is state_dict[k] for k in back)
    assert strip_prefixes({"module.swin_unet.norm.weight": torch.ones(1)}, SWIN_UNET_PREFIXES).keys() == {"norm.weight"}


def test_convert_swin_unet_reads_both_layouts(official_t):
    """An official file and the densekit state dict it converts to give the same densekit keys and tensors."""
    official, report = convert_swin_unet(official_t.state_dict())
    again, again_report = convert_swin_unet(official)
    assert (report.kind, report.layout, again_report.layout) == ("Swin-Unet", "official", "densekit")
    assert again.keys() == official.keys() and all(again[k] is official[k] for k in official)


def test_imagenet_keys_are_mirrored_into_the_decoder(official_state_dict):
    """ImageNet Swin-T (4 stages): stage i is also the decoder stage officially named layers_up.3-i; the final
    norm is the bottleneck norm; the mirrored pairs name the checkpoint's own keys."""
    converted, report = imagenet_to_swin_unet(official_state_dict, num_stages=4)
    weight = official_state_dict["layers.1.blocks.0.mlp.fc1.weight"]
    assert converted["backbone.stages.1.blocks.0.mlp.fc1.weight"] is weight
    assert converted["decode_head.stages.1.blocks.0.mlp.fc1.weight"] is weight  # layers_up.2
    assert converted["norm.weight"] is official_state_dict["norm.weight"]
    assert ("layers.1.blocks.0.mlp.fc1.weight", "decode_head.stages.1.blocks.0.mlp.fc1.weight") in report.mirrored
    assert all(src.startswith("layers.") for src, _ in report.mirrored)
    assert {key for key, _ in report.dropped} >= {k for k in official_state_dict if k.startswith("head.")}
