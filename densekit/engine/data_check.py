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


def head_class_counts(model: dict) -> dict[str, int]:
    """``{dotted key: num_classes}`` of every head in a model config that has one (``model.decode_head``,
    ``model.auxiliary_head``, each of a list of auxiliary heads)."""
    counts = {}
    for name, head in model.items():
        if not name.endswith("_head") or name == "rpn_head":  # an RPN's num_classes is objectness, not classes
            continue
        heads = head if isinstance(head, (list, tuple)) else [head]
        for i, sub in enumerate(heads):
            if isinstance(sub, dict) and isinstance(sub.get("num_classes"), int):
                index = f".{i}" if isinstance(head, (list, tuple)) else ""
                counts[f"model.{name}{index}.num_classes"] = sub["num_classes"]
    return counts


def check_num_classes(cfg, loader: str, dataset) -> None:
    """Refuse a config whose heads predict another number of classes than ``dataset`` names.

    Seven class names with a six-output head would train silently (the seventh class never predicted, its IoU
    nan); six names with a four-output head would die in the loss (``index 5 is out of bounds``).
    """
    classes = (getattr(dataset, "metainfo", None) or {}).get("classes")
    model = cfg.get("model")
    if not classes or not isinstance(model, dict):
        return
    wrong = {key: n for key, n in head_class_counts(model).items() if n != len(classes)}
    if wrong:
        heads = ", ".join(f"{key}={n}" for key, n in wrong.items())
        raise ConfigError(f"{loader}.dataset ({type(dataset).__name__}) names {len(classes)} classes "
                          f"({', '.join(map(str, classes))}) but {heads}: set the head(s) to {len(classes)} "
                          f"(--cfg-options {next(iter(wrong))}={len(classes)}, every head) or give the dataset "
                          f"{next(iter(wrong.values()))} class names")


def check_datasets(cfg, loaders: tuple[str, ...] = ("train_dataloader", "val_dataloader")) -> None:
    """Check that the data of ``cfg``'s ``loaders`` is where the config says and that its classes are the
    heads' classes, before a Runner builds a model.

    Each dataset is built with ``lazy_init=True`` (its files are not listed) and its ``check_layout()`` raises
    ``FileNotFoundError`` with the expected layout when a folder is missing. A dataset that generates itself
    (``DemoDataset(generate=True)``) generates here. Raises ``ConfigError`` when a loader has no dataset or
    its class names disagree with a head's ``num_classes`` (``check_num_classes``).
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
            check_num_classes(cfg, name, dataset)
            check = getattr(dataset, "check_layout", None)
            if check is not None:
                check()


# Up to this many samples per dataset are read before training (a few seconds at 512x512); a larger dataset
# reports a bad sample when a dataloader worker meets it.
SAMPLE_CHECK_LIMIT = 1000


def check_samples(cfg, loaders: tuple[str, ...] = ("train_dataloader", "val_dataloader"),
                  limit: int = SAMPLE_CHECK_LIMIT) -> int:
    """Read every sample of ``cfg``'s datasets that raise on a bad sample (``on_bad_sample='raise'``) and hold
    at most ``limit`` samples, the way the pipeline starts (``check_sample``: the file decodes, the mask fits
    the image and the classes), with a progress bar. Returns the number read.

    Raises the dataset's ``BadSampleError`` / ``OSError`` naming the index and the file, before a Runner (and
    its work dir) exists, instead of inside a dataloader worker at the first batch.
    """
    from tqdm import tqdm

    init_default_scope(cfg.get("default_scope", "densekit"))
    read = 0
    for name in loaders:
        loader = cfg.get(name)
        if not isinstance(loader, dict) or not isinstance(loader.get("dataset"), dict):
            continue
        for dataset_cfg in _dataset_cfgs(loader["dataset"]):
            if dataset_cfg.get("on_bad_sample", "raise") != "raise":
                continue
            dataset = DATASETS.build({**dataset_cfg, "lazy_init": True})
            if not hasattr(dataset, "check_sample"):
                continue
            dataset.full_init()
            if len(dataset) > limit:
                continue
            for idx in tqdm(range(len(dataset)), desc=f"checking {name} samples", unit="img", leave=False):
                dataset.check_sample(idx)
            read += len(dataset)
    return read
