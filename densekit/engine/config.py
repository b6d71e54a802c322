"""Config files: read one (by path, or by name from the configs densekit ships), merge ``--cfg-options``, check it.

densekit ships its configs as package data in ``densekit/configs/`` (a checkout links ``configs/`` to it), so a
config can be named the way mmsegmentation's ``mim`` names them: ``densekit train upernet_swin_t_demo`` (or
``upernet_swin_t_demo.py``) runs the shipped file from any directory. A path that exists always wins: a file of
your own named like a shipped config is the one used. ``_base_`` entries are resolved next to the file that
names them, so inheritance works from wherever the package is installed.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from mmengine.config import Config

from .config_check import ConfigError, check_config
from .schedule import follow_run_length

__all__ = ["CONFIG_DIR", "ConfigError", "find_config", "load_config", "shipped_configs"]

# The configs installed with the package (package data; ``configs/`` in a checkout links here).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> dict[str, Path]:
    """``{name: path}`` of every config densekit ships, sorted by name (``'upernet_swin_t_demo'``: its file)."""
    return {path.stem: path for path in sorted(CONFIG_DIR.glob("*.py"))}


def _nearest_text(name: str, names: list[str]) -> str:
    """``'nearest shipped configs: a, b'`` (up to three close to ``name``, closest first), else every shipped name."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"nearest shipped configs: {', '.join(close)}" if close else f"densekit ships: {', '.join(names)}"


def find_config(config: str | os.PathLike) -> Path:
    """The file of ``config``: a path to an existing file, else the name of a shipped config.

    ``'upernet_swin_t_demo'``, ``'upernet_swin_t_demo.py'`` and ``'path/to/my_config.py'`` all work; a name
    is looked up only when it has no directory part (``configs/x.py`` is a path and must exist).

    Raises:
        FileNotFoundError: neither a file nor a shipped name; the message lists the nearest shipped names.
    """
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name[:-3] if path.suffix == ".py" else path.name
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    what = (f"config file {config} does not exist" if path.parent != Path(".")
            else f"config {config} is neither a file nor a config densekit ships")
    raise FileNotFoundError(f"{what}; {_nearest_text(name, list(shipped))} (give a shipped config's name, e.g. "
                            "upernet_swin_t_demo, or the path of a config file)")


_MISSING = object()


def _lookup(cfg, key: str):
    """The value at dotted ``key`` (list indices as numbers), or ``_MISSING``."""
    first, *rest = key.split(".")
    node = cfg.get(first, _MISSING)  # a Config is not a dict: its first level through get()
    for part in rest:
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def _kind(value) -> str | None:
    """The kind of value a key holds, for the override check: 'True or False', 'an integer', 'a number'."""
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return None


def check_override_types(cfg, cfg_options: dict) -> None:
    """Refuse an override whose value is not of the kind the config's value is (``lr=abc`` for a number).

    Only booleans and numbers are checked (an integer key takes integers, a float key any number): strings,
    lists and dicts take other shapes legitimately (a path, a tuple for a list). Raises ``ConfigError``.
    """
    for key, value in cfg_options.items():
        old = _lookup(cfg, key)
        want = None if old is _MISSING else _kind(old)
        got = _kind(value)
        if want is None or got == want or (want == "a number" and got == "an integer"):
            continue
        raise ConfigError(f"--cfg-options {key}={value!r}: {key} must be {want} (the config has {old!r}), "
                          f"got {type(value).__name__} {value!r}")


def _follow_data_root(cfg, old_root) -> list[str]:
    """After a top-level ``data_root`` override, move every dataset whose ``data_root`` was the old value.

    A config file writes ``data_root=data_root`` into its datasets, but mmengine substitutes the variable when
    it reads the file, so the override alone would change nothing (a key silently dropped).
    """
    new_root = cfg.get("data_root")
    if old_root is None or new_root == old_root:
        return []
    moved = []
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        stack = [(cfg.get(loader) or {}).get("dataset")]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict):
                continue
            stack += list(node.get("datasets") or []) + [node.get("dataset")]
            if node.get("data_root") == old_root:
                node["data_root"] = new_root
                moved.append(f"{loader}.dataset")
    return [f"data_root {old_root} -> {new_root}: in {', '.join(sorted(set(moved)))}"] if moved else []


def load_config(config: str | os.PathLike | Config, cfg_options: dict | None = None,
                notes: list[str] | None = None) -> Config:
    """Read a config (a ``Config``, a file, or the name of a shipped config: see ``find_config``) and merge
    ``--cfg-options``; a missing file is a ``FileNotFoundError`` naming the nearest shipped configs.

    Misspelt keys anywhere (``model.decode_haed``, ``train_cfg.max_iter``, ``trian_cfg``) and override values of
    the wrong kind (``optim_wrapper.optimizer.lr=abc``) raise ``densekit.engine.config_check.ConfigError`` naming
    the key. An override of ``train_cfg.max_iters`` / ``max_epochs`` scales the schedulers and the checkpoint and
    validation intervals with it, unless the same override sets them (``schedule.follow_run_length``); one
    line per change is appended to ``notes`` when given.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(str(find_config(config)))
    if cfg_options:
        check_override_types(cfg, cfg_options)
        old_train_cfg, old_root = dict(cfg.get("train_cfg") or {}), cfg.get("data_root")
        cfg.merge_from_dict(cfg_options)
        changes = follow_run_length(cfg, old_train_cfg, cfg_options) + _follow_data_root(cfg, old_root)
        if notes is not None:
            notes.extend(changes)
    cfg.setdefault("default_scope", "densekit")
    check_config(cfg)
    return cfg
