"""densekit's TwinsSVT (mmseg's SVT on timm's modules): options refused by name, freezing covers the stage norms,
and the maps' shapes at odd sizes (mmseg's per-stage corner padding gives ceil(H / stride)). Agreement with mmseg's
definition is tested in tests/convert/test_convert_twins.py."""
from __future__ import annotations

import pytest
import torch

import densekit


def test_options_are_refused_by_name():
    with pytest.raises(ValueError, match="out_norm"):
        densekit.create_backbone("twins_svt_s", out_norm=True)
    with pytest.raises(ValueError, match="with_cp"):
        densekit.create_backbone("twins_svt_s", with_cp=True)
    from densekit.backbones.twins import TwinsSVT

    with pytest.raises(ValueError, match="not a timm Twins-SVT"):
        TwinsSVT("twins_pcpvt_small")


def test_frozen_stages_freeze_their_stage_norms():
    backbone = densekit.create_backbone("twins_svt_s", frozen_stages=2)
    assert not any(p.requires_grad for p in backbone.norm_list[:2].parameters())
    assert all(p.requires_grad for p in backbone.norm_list[2:].parameters())
    assert not any(p.requires_grad for p in backbone.model.blocks[1].parameters())
    assert all(p.requires_grad for p in backbone.model.blocks[2].parameters())


def test_odd_sizes_give_ceil_maps():
    backbone = densekit.create_backbone("twins_svt_s", out_indices=(1, 3)).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 61, 83))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 8, 11), (1, 512, 2, 3)]
    assert backbone.out_channels == [128, 512] and backbone.strides == [8, 32]
