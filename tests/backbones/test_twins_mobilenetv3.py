"""Twins-SVT-S and MobileNetV3-Large through TimmBackbone equal timm's own feature extractor on the same weights.

Reference: ``timm.create_model(name, features_only=True)`` (timm's separate feature path), fed the image as
TimmBackbone's contract defines it: zero-padded right/bottom to the backbone's multiple (32), each map cropped to
``ceil(H / s)``. At 512x512 nothing is padded, so this is timm on the raw image.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import densekit

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "twins_svt_small": ([64, 128, 256, 512], (0, 1, 2, 3)),
    "mobilenetv3_large_100": ([24, 40, 112, 960], (1, 2, 3, 4)),  # timm's stride-2 level 0 is skipped
}


def _reference(name: str, backbone: torch.nn.Module) -> torch.nn.Module:
    ref = timm.create_model(name, features_only=True, out_indices=CASES[name][1]).eval()
    ref_keys = set(ref.state_dict())
    state = {k: v for k, v in backbone.model.state_dict().items()}
    if not set(state) <= ref_keys:  # timm wraps some families as FeatureGetterNet: keys under model.
        state = {"model." + k: v for k, v in state.items()}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k in ref_keys and not k.startswith(("head", "model.head"))]
    return ref


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("size", [(512, 512), (333, 517)])
def test_features_equal_timm(name, size):
    torch.manual_seed(0)
    backbone = densekit.create_backbone(name).eval()
    assert backbone.out_channels == CASES[name][0] and backbone.strides == [4, 8, 16, 32]
    ref = _reference(name, backbone)
    h, w = size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (0, -w % 32, 0, -h % 32))
    with torch.no_grad():
        ours = backbone(x)
        theirs = ref(padded)
    assert len(ours) == 4
    for out, expected, stride in zip(ours, theirs, [4, 8, 16, 32]):
        expected = expected[..., : math.ceil(h / stride), : math.ceil(w / stride)]
        assert out.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_twins_stages_resolve_for_freezing():
    # timm lists Twins' stages as block.i for modules named blocks.i: they must be found to be frozen.
    backbone = densekit.create_backbone("twins_svt_small", frozen_stages=2)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert any(n.startswith("model.blocks.1.") for n in frozen)
    assert not any(n.startswith("model.blocks.2.") for n in frozen)


@pytest.mark.parametrize("size", [(512, 1024), (333, 517)])
def test_dilated_mobilenetv3_equals_timm(size):
    """output_stride=8 (mmseg's "d8" LR-ASPP backbone): levels 0, 1, 4 equal timm's own dilated extractor."""
    torch.manual_seed(0)
    backbone = densekit.create_backbone("mobilenetv3_large_100", output_stride=8, out_indices=(0, 1, 4)).eval()
    assert backbone.out_channels == [16, 24, 960] and backbone.strides == [2, 4, 8]
    ref = timm.create_model("mobilenetv3_large_100", features_only=True, output_stride=8, out_indices=(0, 1, 4))
    ref.load_state_dict(backbone.model.state_dict())
    ref.eval()
    h, w = size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    padded = F.pad(x, (0, -w % 8, 0, -h % 8))  # the backbone's multiple is its largest stride, 8
    with torch.no_grad():
        ours = backbone(x)
        theirs = ref(padded)
    for out, expected, stride in zip(ours, theirs, [2, 4, 8], strict=True):
        expected = expected[..., : math.ceil(h / stride), : math.ceil(w / stride)]
        assert out.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_output_stride_refused_by_name():
    with pytest.raises(ValueError, match="'twins_svt_small' does not take output_stride"):
        densekit.create_backbone("twins_svt_small", output_stride=8)
    with pytest.raises(ValueError, match=r"out_indices must be within 0\.\.4"):
        densekit.create_backbone("mobilenetv3_large_100", output_stride=8, out_indices=(0, 5))
    with pytest.raises(ValueError, match="output_stride must be"):
        densekit.create_backbone("mobilenetv3_large_100", output_stride=4)


def test_lraspp_config_backbone_is_d8():
    """The recipe's own backbone and head settings: maps at strides 2, 4 and 8 with the head's channels."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(REPO / "configs" / "lraspp_mobilenetv3_large_cityscapes.py"))
    kwargs = dict(cfg.model.backbone)
    backbone = densekit.create_backbone(kwargs.pop("type"), **kwargs)
    head = cfg.model.decode_head
    assert backbone.strides == [2, 4, 8]
    assert list(backbone.out_channels) == list(head.in_channels) == [16, 24, 960]
    assert (head.pool_kernel, tuple(head.pool_stride), head.channels) == (49, (16, 20), 128)
