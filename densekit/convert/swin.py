"""A Swin backbone state dict in any layout densekit reads -> densekit's keys (the tables of
``official_swin.py``, ``timm.py`` and ``mmseg.py``; a densekit one only loses its buffers and non-backbone parts)."""
from __future__ import annotations

from collections.abc import Callable

from .detect import LAYOUTS
from .mmseg import mmseg_to_densekit
from .official_swin import official_to_densekit
from .report import LoadReport
from .rules import DROP_RULES, StateDict, Tensors, apply_rules
from .timm import timm_to_densekit


def densekit_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Already densekit: only buffers, heads and the non-backbone parts of a segmentor checkpoint go."""
    out, report = apply_rules(state_dict, DROP_RULES, progress=progress)
    report.layout = "densekit"
    return out, report


_CONVERTERS: dict[str, Callable[..., tuple[StateDict, LoadReport]]] = {
    "official": official_to_densekit,
    "timm": timm_to_densekit,
    "mmseg": mmseg_to_densekit,
    "densekit": densekit_to_densekit,
}


def convert_swin(state_dict: Tensors, layout: str, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Convert an unwrapped Swin state dict from ``layout`` (``detect_layout``) to densekit keys.

    Returns:
        ``(densekit_state_dict, report)`` with ``layout``, ``renamed``, ``permuted`` and ``dropped`` filled in.
    """
    if layout not in _CONVERTERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return _CONVERTERS[layout](state_dict, progress=progress)
