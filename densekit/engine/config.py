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


def load_config(config: str | os.PathLike | Config, cfg_options: dict | None = None) -> Config:
    """Read a config (a ``Config``, a file, or the name of a shipped config: see ``find_config``) and merge
    ``--cfg-options``; a missing file is a ``FileNotFoundError`` naming the nearest shipped configs.

    Misspelt keys anywhere (``model.decode_haed``, ``train_cfg.max_iter``, ``trian_cfg``) raise
    ``densekit.engine.config_check.ConfigError`` naming the key and the nearest valid one.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(str(find_config(config)))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.setdefault("default_scope", "densekit")
    check_config(cfg)
    return cfg
