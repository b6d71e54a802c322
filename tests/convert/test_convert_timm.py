"""Which layout a Swin state dict is in (densekit.convert.detect)."""
from __future__ import annotations

import pytest
import torch

from densekit.convert import CheckpointError, detect_layout


def test_detect_layout(timm_state_dict, official_state_dict):
    headless_timm = {k: v for k, v in timm_state_dict.items() if not k.startswith("head")}
    headless_official = {k: v for k, v in official_state_dict.items() if not k.startswith("head")}
    assert detect_layout(timm_state_dict) == "timm"
    assert detect_layout(headless_timm) == "timm"
    assert detect_layout(official_state_dict) == "official"
    assert detect_layout(headless_official) == "official"
    t = torch.zeros(1)
    assert detect_layout({"stages.0.blocks.0.attn.w_msa.qkv.weight": t}) == "mmseg"
    assert detect_layout({"patch_embed.projection.weight": t, "stages.0.blocks.0.norm1.weight": t}) == "mmseg"
    assert detect_layout({"stages.0.blocks.0.attn.qkv.weight": t}) == "densekit"
    with pytest.raises(CheckpointError, match="V2"):
        detect_layout({"layers.0.blocks.0.attn.cpb_mlp.0.weight": t})
    with pytest.raises(CheckpointError, match="known layout"):
        detect_layout({"conv1.weight": t})
