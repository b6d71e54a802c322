"""Config files: read one (by path, or by name from the configs densekit ships), merge ``--cfg-options``, check it."""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from .config_check import ConfigError, check_config

__all__ = ["ConfigError", "load_config"]


def load_config(config: str | Config, cfg_options: dict | None = None) -> Config:
    """Read a config file (or take a Config) and merge ``--cfg-options``; a clear error for a missing file.

    Misspelt keys anywhere (``model.decode_haed``, ``train_cfg.max_iter``, ``trian_cfg``) raise
    ``densekit.engine.config_check.ConfigError`` naming the key and the nearest valid one.
    """
    if isinstance(config, Config):
        cfg = config
    else:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file {config} does not exist (configs live in configs/*.py)")
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.setdefault("default_scope", "densekit")
    check_config(cfg)
    return cfg
