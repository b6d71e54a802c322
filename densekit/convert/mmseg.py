"""mmsegmentation / mmpretrain Swin layout <-> densekit.

mmseg's ``SwinTransformer`` (and mmpretrain's) names things differently and merges patches with
``nn.Unfold``::

    patch_embed.projection                          -> patch_embed.proj
    stages.{i}.blocks.{j}.attn.w_msa.{relative_position_bias_table, qkv, proj}
                                                    -> stages.{i}.blocks.{j}.attn.*
    stages.{i}.blocks.{j}.ffn.layers.0.0            -> stages.{i}.blocks.{j}.mlp.fc1
    stages.{i}.blocks.{j}.ffn.layers.1              -> stages.{i}.blocks.{j}.mlp.fc2
    stages.{i}.downsample.{norm, reduction}         -> same keys, channels permuted (below)
    norm{i}                                         -> out_norms.{i}
    norm (official final norm kept by swin2mmseg)   -> out_norms.{last}

Patch-merging channel order: official Swin (and densekit) concatenate the 2x2 neighbours as
``[x0, x1, x2, x3]`` = offsets (row, col) ``(0,0), (1,0), (0,1), (1,1)``, channel ``j*C + c``.
``nn.Unfold(2, stride=2)`` on an NCHW map emits channel ``c*4 + kh*2 + kw``: channel-major, and
row-major inside the 2x2 neighbourhood, so its neighbour ``k`` is official neighbour ``[0, 2, 1, 3][k]``.
The reduction's input columns and the merging norm's channels are permuted accordingly.
"""
from __future__ import annotations

import torch

from .report import LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules, num_stages

# Unfold neighbour k is official neighbour _ORDER[k]; the permutation is its own inverse.
_ORDER = [0, 2, 1, 3]


def _official_to_unfold(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim ``4C`` from official ``(j, c)`` to unfold ``(c, k)``."""
    *lead, channels = x.shape
    if channels % 4:
        raise ValueError(f"patch-merging tensor of shape {tuple(x.shape)}: last dim is not 4*C")
    x = x.reshape(*lead, 4, channels // 4)[..., _ORDER, :]
    return x.transpose(-1, -2).reshape(*lead, channels)


def _unfold_to_official(x: torch.Tensor) -> torch.Tensor:
    """Reorder the last dim ``4C`` from unfold ``(c, k)`` to official ``(j, c)``; inverse of the above."""
    *lead, channels = x.shape
    if channels % 4:
        raise ValueError(f"patch-merging tensor of shape {tuple(x.shape)}: last dim is not 4*C")
    x = x.reshape(*lead, channels // 4, 4).transpose(-1, -2)
    return x[..., _ORDER, :].reshape(*lead, channels)


def official_to_unfold_reduction(weight: torch.Tensor) -> torch.Tensor:
    """Reduction weight ``(2C, 4C)`` official -> mmseg (swin2mmseg ``correct_unfold_reduction_order``)."""
    if weight.dim() != 2:
        raise ValueError(f"reduction weight must be (out, 4C), got {tuple(weight.shape)}")
    return _official_to_unfold(weight)


def official_to_unfold_norm(param: torch.Tensor) -> torch.Tensor:
    """Merging-norm weight or bias ``(4C,)`` official -> mmseg (swin2mmseg ``correct_unfold_norm_order``)."""
    if param.dim() != 1:
        raise ValueError(f"merging norm parameter must be (4C,), got {tuple(param.shape)}")
    return _official_to_unfold(param)


def unfold_to_official_reduction(weight: torch.Tensor) -> torch.Tensor:
    """Reduction weight ``(2C, 4C)`` mmseg -> official; exact inverse of ``official_to_unfold_reduction``."""
    if weight.dim() != 2:
        raise ValueError(f"reduction weight must be (out, 4C), got {tuple(weight.shape)}")
    return _unfold_to_official(weight)


def unfold_to_official_norm(param: torch.Tensor) -> torch.Tensor:
    """Merging-norm weight or bias ``(4C,)`` mmseg -> official; exact inverse of ``official_to_unfold_norm``."""
    if param.dim() != 1:
        raise ValueError(f"merging norm parameter must be (4C,), got {tuple(param.shape)}")
    return _unfold_to_official(param)


_BLOCK = r"^(stages\.\d+\.blocks\.\d+\.)"
_REDUCTION = r"^(stages\.\d+\.downsample\.reduction\.weight)$"
_MERGE_NORM = r"^(stages\.\d+\.downsample\.norm\.(?:weight|bias))$"

MMSEG_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(r"^patch_embed\.projection\.", "patch_embed.proj.", why="conv name"),
    Rule(_BLOCK + r"attn\.w_msa\.", r"\1attn.", why="mmseg wraps window attention in w_msa"),
    Rule(_BLOCK + r"ffn\.layers\.0\.0\.", r"\1mlp.fc1.", why="mmcv FFN: layers.0 = (fc1, act, drop)"),
    Rule(_BLOCK + r"ffn\.layers\.1\.", r"\1mlp.fc2.", why="mmcv FFN: layers.1 = fc2"),
    Rule(_REDUCTION, r"\1", value=unfold_to_official_reduction, why="nn.Unfold channel order"),
    Rule(_MERGE_NORM, r"\1", value=unfold_to_official_norm, why="nn.Unfold channel order"),
    Rule(r"^norm(\d+)\.", r"out_norms.\1.", why="per-stage output norms"),
    Rule(r"^norm\.", "out_norms.{last}.", why="official final norm, kept as is by swin2mmseg"),
)

DENSEKIT_TO_MMSEG: tuple[Rule, ...] = (
    Rule(r"^patch_embed\.proj\.", "patch_embed.projection.", why="conv name"),
    Rule(_BLOCK + r"attn\.", r"\1attn.w_msa.", why="mmseg wraps window attention in w_msa"),
    Rule(_BLOCK + r"mlp\.fc1\.", r"\1ffn.layers.0.0.", why="mmcv FFN"),
    Rule(_BLOCK + r"mlp\.fc2\.", r"\1ffn.layers.1.", why="mmcv FFN"),
    Rule(_REDUCTION, r"\1", value=official_to_unfold_reduction, why="nn.Unfold channel order"),
    Rule(_MERGE_NORM, r"\1", value=official_to_unfold_norm, why="nn.Unfold channel order"),
    Rule(r"^out_norms\.(\d+)\.", r"norm\1.", why="per-stage output norms"),
)


def mmseg_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """mmseg/mmpretrain Swin backbone state dict (``backbone.`` already stripped) -> densekit.

    Returns:
        ``(state_dict, report)``; merging weights are new (permuted) tensors, the rest are shared.
    """
    context = {"last": num_stages(state_dict, "stages") - 1}
    out, report = apply_rules(state_dict, MMSEG_TO_DENSEKIT, context, progress)
    report.layout = "mmseg"
    return out, report


def densekit_to_mmseg(state_dict: Tensors) -> StateDict:
    """densekit Swin state dict -> mmseg Swin backbone layout (without the ``backbone.`` prefix).

    The exact inverse of ``mmseg_to_densekit`` on densekit keys; mmseg's ``relative_position_index``
    buffers are not written (mmseg rebuilds them).
    """
    out, _ = apply_rules(state_dict, DENSEKIT_TO_MMSEG)
    return out
