"""Registries.

``_BACKBONES`` is a dict plus a decorator on short builder functions named after the model (timm
style); it answers ``densekit.create_backbone(name)``. ``MODELS``, ``DATASETS``, ``TRANSFORMS``,
``METRICS`` and ``HOOKS`` are mmengine registries (children of mmengine's root registries, so the Runner finds
them) that config files build from with ``type='...'``.
"""
from __future__ import annotations

from collections.abc import Callable

import mmengine.registry as mmengine_registry
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry
from torch import nn

MODELS = Registry("model", parent=MMENGINE_MODELS,
                  locations=["densekit.models", "densekit.necks", "densekit.heads"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, locations=["densekit.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, locations=["densekit.datasets"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, locations=["densekit.evaluation"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, locations=["densekit.engine.hooks"])

# Empty children of mmengine's other registries, so that building the Runner's loops, optimizers,
# schedulers, visualizer, ... under ``default_scope='densekit'`` finds mmengine's classes through the
# parent without a "Failed to search registry with scope 'densekit'" warning per component.
_MMENGINE_ONLY = {}
_OWN_LOCATIONS = {"OPTIM_WRAPPER_CONSTRUCTORS": ["densekit.engine.optim"]}  # layer-wise lr decay constructors
for _name in ("DATA_SAMPLERS", "EVALUATOR", "FUNCTIONS", "INFERENCERS", "LOG_PROCESSORS", "LOOPS", "MODEL_WRAPPERS",
              "OPTIMIZERS", "OPTIM_WRAPPERS", "OPTIM_WRAPPER_CONSTRUCTORS", "PARAM_SCHEDULERS", "RUNNERS",
              "RUNNER_CONSTRUCTORS", "TASK_UTILS", "VISBACKENDS", "VISUALIZERS", "WEIGHT_INITIALIZERS"):
    _parent = getattr(mmengine_registry, _name)
    _MMENGINE_ONLY[_name] = Registry(_parent.name, parent=_parent, scope="densekit",
                                     locations=_parent._locations + _OWN_LOCATIONS.get(_name, []))


def mmengine_child(name: str) -> Registry:
    """densekit's child of mmengine's registry ``name`` (``"LOOPS"``, ``"OPTIMIZERS"``, ...): what the Runner
    looks types up in under ``default_scope='densekit'``, so it also finds what densekit registers there."""
    return _MMENGINE_ONLY[name]


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
