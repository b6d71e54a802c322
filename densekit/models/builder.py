"""The model a config describes, built from densekit's registry."""
from __future__ import annotations

import copy

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..registry import MODELS


def build_model(cfg: Config, pretrained: bool = True) -> torch.nn.Module:
    """The config's ``model``; ``pretrained=False`` skips the backbone's ``pretrained`` weights (a
    whole-model checkpoint will hold them). ``cfg`` itself is left unchanged."""
    init_default_scope(cfg.get("default_scope", "densekit"))
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained and "pretrained" in model_cfg.get("backbone", {}):
        model_cfg.backbone.pretrained = None
    return MODELS.build(model_cfg)
