"""timm Swin layout (``timm.models.swin_transformer``) -> densekit.

timm's keys are the official ones with two moves: each patch merging sits at the START of the next
stage (``layers.{i}.downsample`` for i = 1..last is the official ``layers.{i-1}.downsample``), and
the classifier is ``head.fc``. Headless checkpoints exist, so layouts are told apart by where the
downsampling lives (``densekit.convert.detect_layout``), not by the head.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .report import CheckpointError, LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules, num_stages


def _downsample_to_previous_stage(match: re.Match, context: Mapping[str, object]) -> str:
    # timm: merging at the start of stage i; densekit (and official): at the end of stage i - 1.
    stage = int(match.group(1))
    if stage == 0:
        raise CheckpointError("timm layout with a downsample in layers.0: expected none before stage 1")
    return f"stages.{stage - 1}.downsample."


TIMM_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(r"^layers\.(\d+)\.downsample\.", _downsample_to_previous_stage, why="merging moves to the previous stage"),
    Rule(r"^layers\.(\d+)\.", r"stages.\1.", why="stage container"),
    Rule(r"^norm\.", "out_norms.{last}.", why="final norm is the last stage's output norm"),
)


def timm_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """timm Swin state dict -> densekit Swin state dict (tensors shared, not copied).

    Returns:
        ``(state_dict, report)``; ``head.fc.*`` is dropped, ``norm.*`` becomes ``out_norms.{last}.*``.
    """
    context = {"last": num_stages(state_dict, "layers") - 1}
    out, report = apply_rules(state_dict, TIMM_TO_DENSEKIT, context, progress)
    report.layout = "timm"
    return out, report
