"""Backbone registry: a dict plus a decorator on short builder functions named after the model (timm style).

mmengine's ``MODELS`` registry (for config files) is separate and lives with the models that
configs build; this one answers ``densekit.create_backbone(name)``.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name, e.g. ``swin_t``."""
    if fn.__name__ in _BACKBONES:
        raise KeyError(f"backbone {fn.__name__!r} is registered twice")
    _BACKBONES[fn.__name__] = fn
    return fn


def list_backbones() -> list[str]:
    """Names of densekit's own backbones (timm names are accepted too, see ``create_backbone``)."""
    return sorted(_BACKBONES)


def get_backbone_builder(name: str) -> Callable[..., nn.Module] | None:
    """The builder registered as ``name``, or None."""
    return _BACKBONES.get(name)
