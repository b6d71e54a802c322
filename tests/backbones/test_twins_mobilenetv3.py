"""Twins-SVT-S and MobileNetV3-Large through TimmBackbone equal timm's own feature extractor on the same weights.

Reference: ``timm.create_model(name, features_only=True)`` (timm's separate feature path), fed the image as
TimmBackbone's contract defines it: zero-padded right/bottom to the backbone's multiple (32), each map cropped to
``ceil(H / s)``. At 512x512 nothing is padded, so this is timm on the raw image.
"""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import densekit

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
