"""Official Swin release layout (microsoft/Swin-Transformer) <-> densekit.

Official checkpoints are ``{'model': state_dict}`` with keys::

    patch_embed.proj, patch_embed.norm, [absolute_pos_embed]
    layers.{i}.blocks.{j}.{norm1, attn.relative_position_bias_table, attn.relative_position_index,
                           attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, layers.{i}.blocks.{j}.attn_mask
    layers.{i}.downsample.{norm, reduction}    (i < last: at the END of stage i, as in densekit)
    norm (final norm, sized for the last stage), head (classifier)

The patch-merging channel order ``[x0, x1, x2, x3]`` is densekit's own, so conversion is renaming:
``layers.`` -> ``stages.``, the final ``norm`` -> ``out_norms.{last}`` (the same LayerNorm on the
last stage's output), buffers and the classifier dropped.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .report import LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules, num_stages

OFFICIAL_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(r"^layers\.(\d+)\.", r"stages.\1.", why="stage container"),
    Rule(r"^norm\.", "out_norms.{last}.", why="final norm is the last stage's output norm"),
)


def official_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Official Swin state dict -> densekit Swin state dict (tensors shared, not copied).

    Returns:
        ``(state_dict, report)``; ``norm.*`` becomes ``out_norms.{last}.*`` whatever the target
        model, which ``load_pretrained`` drops again (and reports) when the model has no such norm.
    """
    context = {"last": num_stages(state_dict, "layers") - 1}
    out, report = apply_rules(state_dict, OFFICIAL_TO_DENSEKIT, context, progress)
    report.layout = "official"
    return out, report


def _out_norm_to_official(match: re.Match, context: Mapping[str, object]) -> str | None:
    # The official model has one final norm, on the last stage; the other out norms have no home.
    return "norm." if int(match.group(1)) == context["last"] else None


DENSEKIT_TO_OFFICIAL: tuple[Rule, ...] = (
    Rule(r"^stages\.(\d+)\.", r"layers.\1.", why="stage container"),
    Rule(r"^out_norms\.(\d+)\.", _out_norm_to_official, why="only the last out norm exists officially"),
)


def densekit_to_official(state_dict: Tensors) -> StateDict:
    """densekit Swin state dict -> official Swin layout (no buffers, no head).

    The inverse of ``official_to_densekit`` on the keys both layouts share; used to check densekit
    weights against timm (whose ``checkpoint_filter_fn`` reads the official layout) and for interop.
    """
    context = {"last": num_stages(state_dict, "stages") - 1}
    out, _ = apply_rules(state_dict, DENSEKIT_TO_OFFICIAL, context)
    return out
