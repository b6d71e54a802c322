"""Find misspelt config keys before anything is built, and name the nearest valid key.

Without this, ``train_dataloader.batch_sise`` surfaces as a ``TypeError`` deep inside the dataloader
constructor, ``model.decode_haed`` as "missing 1 required positional argument: 'decode_head'", and a
misspelt top-level key (``param_schedular``) is silently ignored. ``check_config`` checks:

- top-level keys: a key that is not in the Runner's vocabulary but close to a vocabulary key the config
  lacks is a typo (other unknown keys are the helper variables flat configs define, e.g. ``crop_size``);
- ``*_dataloader`` keys against ``torch.utils.data.DataLoader`` plus what mmengine takes out first;
- every ``dict(type=...)`` under ``model``, the dataloaders' ``dataset``, pipelines, evaluators and
  ``custom_hooks`` against the constructor signature of the registered class (skipped where it takes
  ``**kwargs`` or the type is not registered: the build reports that itself).
"""
from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping

from mmengine.registry import Registry
from torch.utils.data import DataLoader


class ConfigError(ValueError):
    """A config that cannot work (a wrong key, a missing section), said in one sentence; the tools print it as
    one ``error:`` line (``densekit.cli.common.run_tool``)."""


# mmengine.runner.Runner.from_cfg's keys, plus the pipelines and TTA keys mmseg-style configs define.
TOP_LEVEL_KEYS = frozenset({
    "model", "work_dir", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg",
    "test_cfg", "auto_scale_lr", "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator",
    "default_hooks", "custom_hooks", "data_preprocessor", "load_from", "resume", "launcher", "env_cfg",
    "log_processor", "log_level", "visualizer", "default_scope", "randomness", "experiment_name",
    "train_pipeline", "test_pipeline", "tta_pipeline", "tta_model", "dataset_type", "data_root",
})
# build_dataloader pops these before calling DataLoader(**rest).
_DATALOADER_EXTRA = frozenset({"dataset", "sampler", "batch_sampler", "collate_fn", "worker_init_fn"})

# Keys a parent takes out of a child's dict before building it (the segmentors pop a head's loss_decode and
# ignore_index, mmseg's head keys, for the head's loss stack).
_PARENT_KEYS = frozenset({"loss_decode", "ignore_index"})


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(where: str, key: str, owner: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    return ConfigError(f"config key {where}.{key}: {owner} has no argument {key!r}{_suggest(key, valid)} "
                       f"(valid: {', '.join(valid)})")


def _parameters(fn: Callable) -> set[str] | None:
    """Keyword names ``fn`` accepts, or None when it takes ``**kwargs`` (anything goes)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL} - {"self"}


def _backbone_parameters(name: str) -> set[str] | None:
    """A densekit backbone builder's arguments plus, where it forwards ``**kwargs`` to the class its return
    annotation names (``swin_t(...) -> SwinTransformer``), that class's; None for timm names."""
    from ..registry import get_backbone_builder

    builder = get_backbone_builder(name)
    if builder is None:
        return None
    own = _parameters(builder)
    if own is not None:
        return own
    try:
        returned = typing.get_type_hints(builder).get("return")
    except Exception:  # unresolvable annotations: no check rather than a false alarm
        return None
    target = _parameters(returned) if inspect.isclass(returned) else None
    if target is None:
        return None
    params = inspect.signature(builder).parameters.values()
    return target | {p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}


def _check_typed(cfg: Mapping, registry: Registry, where: str, nested: Registry | None = None) -> None:
    """Check a ``dict(type=...)`` against its registered class, then its nested typed dicts."""
    kind = cfg.get("type")
    valid = None
    if isinstance(kind, str):
        if where.endswith(".backbone"):
            valid = _backbone_parameters(kind)
        else:
            target = registry.get(kind)
            valid = _parameters(target) if target is not None else None
    if valid is not None:
        for key in cfg:
            if key != "type" and key not in valid and key not in _PARENT_KEYS:
                raise _unknown(where, key, str(kind), valid)
    for key, value in cfg.items():
        _check_value(value, nested or registry, f"{where}.{key}")


def _check_value(value: object, registry: Registry, where: str) -> None:
    if isinstance(value, Mapping) and "type" in value:
        _check_typed(value, registry, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, registry, f"{where}[{i}]")


def _check_dataloader(cfg: Mapping, where: str) -> None:
    from ..registry import DATASETS, TRANSFORMS

    valid = (_parameters(DataLoader.__init__) or set()) | _DATALOADER_EXTRA
    for key in cfg:
        if key not in valid:
            raise _unknown(where, key, "the dataloader (torch DataLoader + mmengine's sampler/collate_fn)", valid)
    dataset = cfg.get("dataset")
    if isinstance(dataset, Mapping):
        _check_typed(dataset, DATASETS, f"{where}.dataset", nested=TRANSFORMS)


def check_top_level(keys: Iterable[str]) -> None:
    """A key close to a Runner key that the config does not have is a misspelling of it."""
    keys = set(keys)
    for key in sorted(keys - TOP_LEVEL_KEYS):
        close = difflib.get_close_matches(key, sorted(TOP_LEVEL_KEYS - keys), n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"config key {key!r} is not a config key the Runner reads; did you mean {close[0]!r}?")


def check_config(cfg: Mapping) -> None:
    """Raise ``ConfigError`` naming the first misspelt key (dotted path) and the nearest valid name."""
    from ..registry import HOOKS, METRICS, MODELS, TRANSFORMS

    check_top_level(cfg.keys())
    if isinstance(cfg.get("model"), Mapping):
        _check_typed(cfg["model"], MODELS, "model")
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if isinstance(cfg.get(name), Mapping):
            _check_dataloader(cfg[name], name)
    for name in ("train_pipeline", "test_pipeline"):
        _check_value(cfg.get(name), TRANSFORMS, name)
    for name in ("val_evaluator", "test_evaluator"):
        _check_value(cfg.get(name), METRICS, name)
    _check_value(cfg.get("custom_hooks"), HOOKS, "custom_hooks")
