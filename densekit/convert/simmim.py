"""SimMIM pretraining files (microsoft/SimMIM ``simmim.py``) -> the Swin encoder inside them.

A SimMIM checkpoint is ``{'model': state_dict}`` of the whole masked-image model::

    encoder.{patch_embed, layers.i..., norm}    the Swin (V1 or V2) in the official layout
    encoder.mask_token                          (1, 1, C): replaces masked patches, pretraining only
    decoder.*                                   Conv2d + PixelShuffle predicting pixels, pretraining only

The encoder keys lose their prefix and are converted as the layout they are in; the mask token and the decoder
are dropped and reported. Their windows (6 or 12 at 192 px) are moved to the fine-tuning window by the loaders:
bicubic tables for V1 (``resize.py``), coordinates normalised by the pretrained windows for V2.
"""
from __future__ import annotations

from collections.abc import Iterable

from .report import LoadReport
from .rules import Rule, StateDict, Tensors, apply_rules

MASK_TOKEN_WHY = "masked-image-modelling mask token: used only in pretraining"
SIMMIM_RULES: tuple[Rule, ...] = (
    Rule(r"^encoder\.mask_token$", None, why=MASK_TOKEN_WHY),
    Rule(r"^decoder\.", None, why="SimMIM pixel decoder: used only in pretraining"),
    Rule(r"^encoder\.", "", why="SimMIM encoder"),
)


def is_simmim(keys: Iterable[str]) -> bool:
    """Whether state-dict keys are a SimMIM model's: ``encoder.*`` with ``encoder.mask_token`` or ``decoder.*``."""
    keys = list(keys)
    return any(key.startswith("encoder.") for key in keys) and (
        "encoder.mask_token" in keys or any(key.startswith("decoder.") for key in keys))


def simmim_encoder(state_dict: Tensors) -> tuple[StateDict, LoadReport]:
    """The encoder's tensors with ``encoder.`` removed; the report drops the mask token and the decoder."""
    return apply_rules(state_dict, SIMMIM_RULES)


def trace_back(pre: LoadReport, report: LoadReport) -> LoadReport:
    """``report`` (a conversion of the encoder) with the SimMIM step's drops first and every key named as in the
    file (``encoder.layers.0...`` rather than ``layers.0...``), so messages point at the checkpoint's keys."""
    origin = {new: old for old, new in pre.renamed}
    renamed_here = {old for old, _ in report.renamed}
    dropped_here = {key for key, _ in report.dropped}
    report.renamed = [(origin.get(old, old), new) for old, new in report.renamed] + [
        (old, new) for old, new in pre.renamed if new not in renamed_here and new not in dropped_here]
    report.dropped = pre.dropped + [(origin.get(key, key), why) for key, why in report.dropped]
    return report
