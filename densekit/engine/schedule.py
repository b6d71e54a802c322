"""A shorter or longer run from one override: ``train_cfg.max_iters`` (or ``max_epochs``) moves the rest with it.

A config writes its schedule from one variable (``end=max_iters`` in ``param_scheduler``, the checkpoint and
validation intervals), but mmengine's configs are plain values once read, so ``--cfg-options
train_cfg.max_iters=20`` alone would leave ``PolyLR(end=200)`` and ``checkpoint interval=200``: the lr never
reaches its end and no checkpoint is written. ``follow_run_length`` scales them by the same ratio, except what
the same override sets explicitly.
"""
from __future__ import annotations

from collections.abc import Iterable

from mmengine.config import Config

__all__ = ["follow_run_length", "rescale_schedulers"]

_LENGTH_KEYS = ("max_iters", "max_epochs")


def rescale_schedulers(schedulers: list[dict], old_max: int, new_max: int, by_epoch: bool = False) -> list[str]:
    """Stretch or shrink ``schedulers`` from ``old_max`` to ``new_max`` steps, in place; returns what changed.

    ``begin`` and ``end`` are multiplied by ``new_max / old_max`` and rounded; a scheduler counted in the
    loop's unit (``by_epoch`` equal to the loop's) is clamped to ``[0, new_max]`` and keeps at least one step.
    A scheduler without ``end`` (it runs to the end) keeps none.
    """
    ratio = new_max / old_max
    changes = []
    for i, sched in enumerate(schedulers):
        same_unit = bool(sched.get("by_epoch", True)) == by_epoch
        before = (sched.get("begin", 0), sched.get("end"))
        begin = round(before[0] * ratio)
        if same_unit:
            begin = min(begin, new_max - 1)
        sched["begin"] = begin
        if before[1] is not None:
            end = round(before[1] * ratio)
            sched["end"] = max(begin + 1, min(end, new_max)) if same_unit else max(begin + 1, end)
        after = (sched["begin"], sched.get("end"))
        if after != before:
            changes.append(f"param_scheduler[{i}] ({sched.get('type', '?')}) begin {before[0]} -> {after[0]}"
                           + ("" if before[1] is None else f", end {before[1]} -> {after[1]}"))
    return changes


def _scaled(value: int, ratio: float, new_max: int) -> int:
    return max(1, min(round(value * ratio), new_max))


def _is_set(explicit: Iterable[str], key: str) -> bool:
    return any(name == key or name.startswith(key + ".") or key.startswith(name + ".") for name in explicit)


def follow_run_length(cfg: Config, old_train_cfg: dict, explicit: Iterable[str]) -> list[str]:
    """After ``train_cfg.max_iters``/``max_epochs`` changed from ``old_train_cfg``'s, scale the schedulers'
    ``begin``/``end``, ``default_hooks.checkpoint.interval`` and ``train_cfg.val_interval`` by the same ratio,
    in place, except the keys in ``explicit`` (the dotted keys of the same ``--cfg-options``).

    Returns one line per change (empty when the length did not change).
    """
    train_cfg = cfg.get("train_cfg") or {}
    explicit = list(explicit)
    for key in _LENGTH_KEYS:
        old, new = old_train_cfg.get(key), train_cfg.get(key)
        if isinstance(old, int) and isinstance(new, int) and old > 0 and new > 0 and old != new:
            break
    else:
        return []
    by_epoch, ratio = key == "max_epochs", new / old
    changes = []
    schedulers = cfg.get("param_scheduler")
    if schedulers and not _is_set(explicit, "param_scheduler"):
        changes += rescale_schedulers(schedulers if isinstance(schedulers, list) else [schedulers], old, new,
                                      by_epoch)
    checkpoint = (cfg.get("default_hooks") or {}).get("checkpoint")
    if (isinstance(checkpoint, dict) and isinstance(checkpoint.get("interval"), int) and checkpoint["interval"] > 0
            and bool(checkpoint.get("by_epoch", True)) == by_epoch
            and not _is_set(explicit, "default_hooks.checkpoint.interval")):
        before, checkpoint["interval"] = checkpoint["interval"], _scaled(checkpoint["interval"], ratio, new)
        if before != checkpoint["interval"]:
            changes.append(f"default_hooks.checkpoint.interval {before} -> {checkpoint['interval']}")
    interval = train_cfg.get("val_interval")
    if isinstance(interval, int) and interval > 0 and not _is_set(explicit, "train_cfg.val_interval"):
        train_cfg["val_interval"] = _scaled(interval, ratio, new)
        if interval != train_cfg["val_interval"]:
            changes.append(f"train_cfg.val_interval {interval} -> {train_cfg['val_interval']}")
    return [f"train_cfg.{key} {old} -> {new}: scaled {change}" for change in changes]
