"""Whole-model checkpoints of models on a Swin V2 backbone (UPerNet, RPN): what ``densekit test`` / ``infer`` load.

A whole checkpoint's ``backbone.*`` keys cannot tell a densekit Swin V2 from a timm backbone by themselves; the
loader asks the model (``backbone_family``). Each case saves a randomly initialised model and loads it into a
fresh one: in densekit's own layout, and as an mmseg / mmdet-style model whose backbone is in the official Swin V2
layout (what such a repository would save). Every tensor must come back equal.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from densekit.apis import build_model, load_config
from densekit.convert.official_swin import densekit_to_official
from densekit.inference.checkpoint import backbone_family, load_model_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CASES = {"upernet": "upernet_swinv2_t_ade.py", "rpn": "rpn_swinv2_t_fpn_1x_coco.py"}


def _model(name: str, seed: int) -> torch.nn.Module:
    cfg = load_config(str(CONFIGS / CASES[name]))
    cfg.model.backbone.pretrained = None
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # make every tensor differ from a fresh model's initialisation
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    return model.eval()


def _official_backbone(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The whole model with its backbone part in the official Swin V2 layout (``layers.i``, merging at the end,
    the final ``norm``) plus the per-stage ``norm0..2`` segmentation forks of the official code add."""
    backbone = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
    official = {"backbone." + k: v for k, v in densekit_to_official(backbone).items()}
    official.update({"backbone." + re.sub(r"^out_norms\.(\d)\.", r"norm\1.", k): v for k, v in backbone.items()
                     if re.match(r"out_norms\.[0-2]\.", k)})
    assert any(".layers.0.downsample." in key for key in official), "not the official layout"
    return {**official, **{k: v for k, v in state_dict.items() if not k.startswith("backbone.")}}


@pytest.mark.parametrize("layout", ["densekit", "official-backbone"])
@pytest.mark.parametrize("name", list(CASES))
def test_whole_checkpoint_on_swin_v2_loads_every_tensor(name: str, layout: str, tmp_path):
    source = _model(name, seed=1)
    state_dict = source.state_dict()
    if layout == "official-backbone":
        state_dict = _official_backbone(state_dict)
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": state_dict}, path)
    target = _model(name, seed=2)
    assert backbone_family(target) == "swinv2"
    report = load_model_checkpoint(target, path)
    assert report.backbone_layout == ("densekit" if layout == "densekit" else "official")
    expected, loaded = source.state_dict(), target.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_v1_whole_checkpoint_into_a_v2_model_is_refused(tmp_path):
    cfg = load_config(str(CONFIGS / "upernet_swin_t_ade.py"))
    cfg.model.backbone.pretrained = None
    path = tmp_path / "v1.pth"
    torch.save({"state_dict": build_model(cfg).state_dict()}, path)
    with pytest.raises(Exception, match="Swin V1"):
        load_model_checkpoint(_model("upernet", seed=0), path)
