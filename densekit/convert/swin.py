"""A Swin backbone state dict in any layout densekit reads -> densekit's keys (the tables of
``official_swin.py``, ``timm.py`` and ``mmseg.py``; a densekit one only loses its buffers and non-backbone parts)."""
from __future__ import annotations

from collections.abc import Callable

from .detect import LAYOUTS, detect_layout
from .mmseg import mmseg_to_densekit
from .official_swin import official_to_densekit
from .report import CheckpointError, LoadReport
from .rules import DROP_RULES, StateDict, Tensors, apply_rules
from .simmim import simmim_encoder, trace_back
from .timm import timm_to_densekit


def densekit_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Already densekit: only buffers, heads and the non-backbone parts of a segmentor checkpoint go."""
    out, report = apply_rules(state_dict, DROP_RULES, progress=progress)
    report.layout = "densekit"
    return out, report


def simmim_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """A SimMIM pretraining file: its encoder (official layout) converted, mask token and decoder dropped."""
    encoder, pre = simmim_encoder(state_dict)
    inner = detect_layout(encoder)
    if inner == "simmim":
        raise CheckpointError("a SimMIM file nested in another SimMIM file: cannot find the Swin encoder")
    out, report = convert_swin(encoder, inner, progress)
    report = trace_back(pre, report)
    report.layout = f"simmim/{inner}"
    return out, report


_CONVERTERS: dict[str, Callable[..., tuple[StateDict, LoadReport]]] = {
    "official": official_to_densekit,
    "timm": timm_to_densekit,
    "mmseg": mmseg_to_densekit,
    "densekit": densekit_to_densekit,
    "simmim": simmim_to_densekit,
}


def convert_swin(state_dict: Tensors, layout: str, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Convert an unwrapped Swin state dict from ``layout`` (``detect_layout``) to densekit keys.

    Returns:
        ``(densekit_state_dict, report)`` with ``layout``, ``renamed``, ``permuted`` and ``dropped`` filled in.
    """
    if layout not in _CONVERTERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return _CONVERTERS[layout](state_dict, progress=progress)
