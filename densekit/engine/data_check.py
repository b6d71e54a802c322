"""Check that a config's data is where it says, before a Runner builds a model."""
from __future__ import annotations

from collections.abc import Iterator

from mmengine.registry import init_default_scope

from ..registry import DATASETS
from .config_check import ConfigError


def _dataset_cfgs(cfg: dict) -> Iterator[dict]:
    """The leaf dataset configs inside a (possibly wrapped) dataset config: ``ConcatDataset(datasets=[...])``,
    ``RepeatDataset(dataset=...)``, ``ClassBalancedDataset(dataset=...)``."""
    if "datasets" in cfg:
        for sub in cfg["datasets"]:
            yield from _dataset_cfgs(sub)
    elif isinstance(cfg.get("dataset"), dict):
        yield from _dataset_cfgs(cfg["dataset"])
    else:
        yield cfg


def check_datasets(cfg, loaders: tuple[str, ...] = ("train_dataloader", "val_dataloader")) -> None:
    """Check that the data of ``cfg``'s ``loaders`` is where the config says, before a Runner builds a model.

    Each dataset is built with ``lazy_init=True`` (its files are not listed) and its ``check_layout()`` raises
    ``FileNotFoundError`` with the expected layout when a folder is missing. A dataset that generates itself
    (``DemoDataset(generate=True)``) generates here. Raises ``ConfigError`` when a loader has no dataset.
    """
    init_default_scope(cfg.get("default_scope", "densekit"))
    for name in loaders:
        loader = cfg.get(name)
        if loader is None:
            continue
        if not isinstance(loader, dict) or not isinstance(loader.get("dataset"), dict):
            raise ConfigError(f"{name} in the config must be a dict with a 'dataset' entry, got {loader!r}")
        for dataset_cfg in _dataset_cfgs(loader["dataset"]):
            dataset = DATASETS.build({**dataset_cfg, "lazy_init": True})
            check = getattr(dataset, "check_layout", None)
            if check is not None:
                check()
