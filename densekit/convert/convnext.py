"""mmpretrain ConvNeXt layout (mmsegmentation's ConvNeXt UPerNets) -> densekit's TimmBackbone ConvNeXt.

mmseg's ConvNeXt recipes build ``mmpretrain.ConvNeXt``; its keys (``backbone.`` stripped) and timm's::

    downsample_layers.0.{0,1}                 (stem conv, LayerNorm2d)  -> model.stem.{0,1}
    downsample_layers.{i}.{0,1}               (LayerNorm2d, 2x2 conv)   -> model.stages.{i}.downsample.{0,1}
    stages.{i}.{j}.depthwise_conv                                       -> model.stages.{i}.blocks.{j}.conv_dw
    stages.{i}.{j}.norm                                                 -> model.stages.{i}.blocks.{j}.norm
    stages.{i}.{j}.pointwise_conv{1,2}        (nn.Linear)               -> model.stages.{i}.blocks.{j}.mlp.fc{1,2}
    stages.{i}.{j}.gamma                      (C,)                      -> model.stages.{i}.blocks.{j}.gamma
    norm{i}                                   (out_indices norms)       -> out_norms.{i}

Both run the same arithmetic (LayerNorm over channels with eps 1e-6, Linear pointwise layers, layer scale
``gamma * x``), so the tensors move unchanged; ``linear_pw_conv=False`` files hold 1x1 convs ``(O, I, 1, 1)``,
which become the ``(O, I)`` Linear weights. ConvNeXt V2 (``grn``) is not this layout and is refused.
"""
from __future__ import annotations

import torch

from .report import CheckpointError, LoadReport
from .rules import BUFFER_RULES, Rule, StateDict, Tensors, apply_rules

_BLOCK = r"^stages\.(\d+)\.(\d+)\."


def _pointwise(weight: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight ``(O, I, 1, 1)`` -> Linear ``(O, I)``; Linear weights and biases pass unchanged."""
    return weight.flatten(1) if weight.dim() == 4 else weight


MMPRETRAIN_CONVNEXT_TO_TIMM: tuple[Rule, ...] = BUFFER_RULES + (
    Rule(r"^downsample_layers\.0\.", "model.stem.", why="stem"),
    Rule(r"^downsample_layers\.(\d+)\.", r"model.stages.\1.downsample.", why="downsample at the stage's start"),
    Rule(_BLOCK + r"depthwise_conv\.", r"model.stages.\1.blocks.\2.conv_dw.", why="block names"),
    Rule(_BLOCK + r"norm\.", r"model.stages.\1.blocks.\2.norm.", why="block names"),
    Rule(_BLOCK + r"pointwise_conv1\.(weight|bias)$", r"model.stages.\1.blocks.\2.mlp.fc1.\3", value=_pointwise,
         why="block names"),
    Rule(_BLOCK + r"pointwise_conv2\.(weight|bias)$", r"model.stages.\1.blocks.\2.mlp.fc2.\3", value=_pointwise,
         why="block names"),
    Rule(_BLOCK + r"gamma$", r"model.stages.\1.blocks.\2.gamma", why="layer scale"),
    Rule(r"^norm(\d)\.", r"out_norms.\1.", why="per-stage output norms"),
)


def is_mmpretrain_convnext(keys: list[str]) -> bool:
    """Backbone keys (``backbone.`` stripped) in mmpretrain's ConvNeXt layout."""
    return any(key.startswith("downsample_layers.") for key in keys) and \
        any(".depthwise_conv." in key for key in keys)


def mmpretrain_convnext_to_timm(state_dict: Tensors) -> tuple[StateDict, LoadReport]:
    """mmpretrain ConvNeXt backbone keys (``backbone.`` stripped) -> TimmBackbone keys (``model.*``,
    ``out_norms.*``).

    Raises:
        CheckpointError: a ConvNeXt V2 (``grn``) or a key the table does not know, named.
    """
    if any(".grn." in key for key in state_dict):
        raise CheckpointError("an mmpretrain ConvNeXt V2 backbone (grn keys): only ConvNeXt V1 is converted")
    out, report = apply_rules(state_dict, MMPRETRAIN_CONVNEXT_TO_TIMM)
    unknown = [key for key in out if not key.startswith(("model.", "out_norms."))]
    if unknown:
        raise CheckpointError(f"{len(unknown)} mmpretrain ConvNeXt keys have no densekit counterpart: "
                              + ", ".join(unknown[:8]))
    report.layout = "mmpretrain-convnext"
    return out, report
