"""Train on a folder of your own: ``densekit train CONFIG --data DIR`` rewrites a config's datasets to read DIR.

Two layouts are recognised:

- mmsegmentation's custom-dataset layout, read with ``SegDataset``::

      DIR/images/train/*.<any one image suffix>     DIR/masks/train/*.png    (same names)
      DIR/images/val/*                              DIR/masks/val/*.png
      DIR/classes.txt     one class name per line; line i names mask value i (255 = ignore)
      DIR/palette.txt     optional: one "R G B" (or "R,G,B") line per class

- the Medical Segmentation Decathlon layout, read with ``NiftiSliceDataset`` (Swin-Unet)::

      DIR/imagesTr/*.nii.gz    DIR/labelsTr/*.nii.gz    (DIR/dataset.json optional; its labels name the classes)

  the last case (by name) validates, the others train; the intensity window is the config's
  (``ct`` unless the config's dataset says ``mr`` or a range).

The image suffix is found, not assumed: a folder with no images or with several suffixes is refused, naming the
folder and what it holds. The class names come from ``--classes a,b,c`` or ``classes.txt`` (``dataset.json``'s
labels for NIfTI) and every head's ``num_classes`` follows them. The config's pipelines are kept.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from collections.abc import Iterable, Sequence

from mmengine.config import Config

from ..datasets.seg.demo import MARKER
from .config_check import ConfigError

__all__ = ["IMAGE_SUFFIXES", "find_image_suffix", "is_own_folder", "read_classes", "set_num_classes",
           "use_data_folder"]

# Suffixes OpenCV reads (cv2.imread); the longest match wins, so ".tif" and ".tiff" stay apart.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SEG_SPLITS = ("train", "val")
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
# Keys of a dataset config that describe how to read samples, not where: kept when the folder replaces it.
_KEPT_DATASET_KEYS = ("pipeline", "on_bad_sample", "serialize_data", "max_refetch")


def is_own_folder(data_dir: str) -> bool:
    """True when ``data_dir`` holds one of the two layouts above (``images/train`` or ``imagesTr``)."""
    return osp.isdir(osp.join(data_dir, "images", "train")) or osp.isdir(osp.join(data_dir, "imagesTr"))


def _suffix_of(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[-len(suffix):]
    return osp.splitext(name)[1] or name


def find_image_suffix(folder: str) -> str:
    """The one image suffix of the files in ``folder`` (recursive; hidden files ignored), e.g. ``'.png'``.

    Raises:
        FileNotFoundError: ``folder`` is missing or holds no image (the message counts what it holds).
        ConfigError: images of several suffixes (``SegDataset`` pairs one suffix; the message counts each).
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist; a data folder holds images/train, "
                                "images/val, masks/train, masks/val and classes.txt")
    counts: Counter = Counter()
    for _, _, names in os.walk(folder, followlinks=True):
        counts.update(_suffix_of(name) for name in names if not name.startswith("."))
    images = {s: n for s, n in counts.items() if s.lower() in IMAGE_SUFFIXES}
    held = ", ".join(f"{n} {s}" for s, n in counts.most_common()) or "nothing"
    if not images:
        raise FileNotFoundError(f"image folder {folder} holds no image ({held}); images are files ending in "
                                f"{', '.join(IMAGE_SUFFIXES)}")
    if len(images) > 1:
        raise ConfigError(f"image folder {folder} mixes image suffixes ({held}); convert them to one format "
                          "(the dataset pairs images and masks by name with one suffix)")
    return next(iter(images))


def read_classes(data_dir: str, classes: str | Sequence[str] | None = None) -> list[str]:
    """Class names from ``classes`` (``'a,b,c'`` or a list) or ``data_dir/classes.txt`` (one per line).

    Raises:
        FileNotFoundError: neither given nor ``classes.txt`` present.
        ConfigError: fewer than two names, or a name twice.
    """
    path = osp.join(data_dir, "classes.txt")
    if classes is not None:
        names, source = (classes.split(",") if isinstance(classes, str) else list(classes)), "--classes"
    elif osp.isfile(path):
        with open(path, encoding="utf-8") as f:
            names, source = f.read().splitlines(), path
    else:
        raise FileNotFoundError(f"{path} does not exist: write one class name per line (line i names mask "
                                "value i), or pass --classes a,b,c")
    names = [name.strip() for name in names if name.strip()]
    if len(names) < 2:
        raise ConfigError(f"{source} names {len(names)} class(es); a segmentation needs at least two")
    twice = sorted(name for name, n in Counter(names).items() if n > 1)
    if twice:
        raise ConfigError(f"{source} names {twice} more than once; each mask value needs its own name")
    return names


def read_palette(path: str, num_classes: int) -> list[list[int]]:
    """``num_classes`` RGB triples from ``path`` (one ``R G B`` or ``R,G,B`` line per class, 0..255)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.replace(",", " ").split() for line in f.read().splitlines() if line.strip()]
    try:
        palette = [[int(v) for v in line] for line in lines]
    except ValueError:
        raise ConfigError(f"{path}: each line must be three integers R G B, got {lines}") from None
    if len(palette) != num_classes or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in palette):
        raise ConfigError(f"{path} must hold one R G B line (0..255) per class: {num_classes} classes, "
                          f"got {len(palette)} lines")
    return palette


def set_num_classes(model: dict, num_classes: int, keep: Iterable[str] = ()) -> list[str]:
    """Set ``num_classes`` in every head of a model config (``decode_head``, ``auxiliary_head``, a list of
    auxiliary heads, any other ``*_head`` that has the key) except the dotted keys in ``keep`` (set explicitly
    by the user: the class check then judges them); returns the dotted keys set."""
    keep, keys = set(keep), []
    for name, head in model.items():
        if not name.endswith("_head"):
            continue
        for i, sub in enumerate(head if isinstance(head, (list, tuple)) else [head]):
            key = f"model.{name}" + (f".{i}" if isinstance(head, (list, tuple)) else "") + ".num_classes"
            if isinstance(sub, dict) and "num_classes" in sub and key not in keep:
                sub["num_classes"] = num_classes
                keys.append(key)
    return keys


def _seg_datasets(data_dir: str, classes: list[str]) -> dict[str, dict]:
    """``SegDataset`` configs (without pipelines) for the ``train`` and ``val`` splits of ``data_dir``."""
    palette_path = osp.join(data_dir, "palette.txt")
    palette = read_palette(palette_path, len(classes)) if osp.isfile(palette_path) else None
    out = {}
    for split in SEG_SPLITS:
        suffix = find_image_suffix(osp.join(data_dir, "images", split))
        out[split] = dict(type="SegDataset", data_root=data_dir, img_dir=f"images/{split}", ann_dir=f"masks/{split}",
                          img_suffix=suffix, seg_map_suffix=".png", classes=list(classes), palette=palette,
                          reduce_zero_label=False)
    return out


def _nifti_datasets(data_dir: str, classes: list[str] | None, window) -> tuple[dict[str, dict], list[str]]:
    """``NiftiSliceDataset`` configs: the last case validates, the others train (one case: both)."""
    from ..datasets.medical.io import case_name  # nibabel loads only for NIfTI folders
    from ..datasets.medical.nifti import NiftiSliceDataset

    if classes is None and not osp.isfile(osp.join(data_dir, "dataset.json")):
        raise FileNotFoundError(f"{data_dir} names no classes: write {osp.join(data_dir, 'classes.txt')} (one name "
                                "per line, background first), a dataset.json with 'labels', or pass --classes a,b,c")
    probe = NiftiSliceDataset(data_root=data_dir, classes=classes, lazy_init=True)  # classes None: dataset.json's
    probe.check_layout()
    cases = sorted(case_name(image) for image, _ in probe.pairs)
    train_cases = cases[:-1] or cases
    names = list(classes or probe.metainfo["classes"])
    common = dict(type="NiftiSliceDataset", data_root=data_dir, classes=names, window=window)
    return {"train": dict(common, cases=train_cases), "val": dict(common, cases=cases[-1:])}, names


def use_data_folder(cfg: Config, data_dir: str, classes: str | Sequence[str] | None = None,
                    keep: Iterable[str] = ()) -> list[str]:
    """Point ``cfg``'s train / val / test datasets at ``data_dir`` and its heads at its classes, in place.

    ``classes``: ``'a,b,c'`` or a list; default ``data_dir/classes.txt`` (NIfTI: ``dataset.json``'s labels).
    ``keep``: dotted keys the user set explicitly (``--cfg-options``): a head's ``num_classes`` among them stays.
    Returns one line per change, for the log. Raises ``FileNotFoundError`` / ``ConfigError`` naming the
    folder or file at fault.
    """
    data_dir = osp.abspath(osp.expanduser(str(data_dir)))
    if not osp.isdir(data_dir):
        raise FileNotFoundError(f"--data {data_dir} is not a folder")
    if osp.isdir(osp.join(data_dir, "imagesTr")):
        names = read_classes(data_dir, classes) if classes is not None or osp.isfile(
            osp.join(data_dir, "classes.txt")) else None
        window = _config_window(cfg)
        datasets, names = _nifti_datasets(data_dir, names, window)
        kind = f"NiftiSliceDataset (window {window!r})"
    elif osp.isdir(osp.join(data_dir, "images")):
        names = read_classes(data_dir, classes)
        datasets, kind = _seg_datasets(data_dir, names), "SegDataset"
    else:
        held = sorted(os.listdir(data_dir))[:10]
        raise FileNotFoundError(f"--data {data_dir} holds neither images/{{train,val}} + masks/{{train,val}} "
                                f"(SegDataset) nor imagesTr + labelsTr (NIfTI); it holds {held}")
    for loader in LOADERS:
        _replace_dataset(cfg, loader, datasets["train" if loader == "train_dataloader" else "val"])
    heads = set_num_classes(cfg.model, len(names), keep)
    return [f"data: {data_dir} as {kind}, {len(names)} classes ({', '.join(names)})",
            f"data: num_classes = {len(names)} in {', '.join(heads) or 'no head (none has num_classes)'}"]


def _config_window(cfg: Config):
    """The intensity window of the config's NiftiSliceDataset (train), else ``'ct'``."""
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    return dataset.get("window", "ct") if dataset.get("type") == "NiftiSliceDataset" else "ct"


def _replace_dataset(cfg: Config, loader: str, dataset: dict) -> None:
    """Replace the dataset of ``cfg[loader]`` (unwrapping Repeat/ConcatDataset) by ``dataset``, keeping how
    samples are read (the pipeline, ``on_bad_sample``)."""
    loader_cfg = cfg.get(loader)
    if not isinstance(loader_cfg, dict) or not isinstance(loader_cfg.get("dataset"), dict):
        return
    old = loader_cfg["dataset"]
    while "datasets" in old or isinstance(old.get("dataset"), dict):  # wrappers: take the first leaf's pipeline
        old = old["datasets"][0] if "datasets" in old else old["dataset"]
    kept = {key: old[key] for key in _KEPT_DATASET_KEYS if key in old}
    if old.get("test_mode"):
        kept["test_mode"] = True
    loader_cfg["dataset"] = {**dataset, **kept}


def demo_data_folder(cfg: Config) -> str | None:
    """The ``data_root`` of a ``DemoDataset`` in ``cfg`` that points at a folder of one's own (one of the two
    layouts above, not a generated demo dataset), else None: such a config trains on that folder as if
    ``--data`` named it, rather than refusing to generate the demo data over it."""
    for loader in LOADERS:
        dataset = (cfg.get(loader) or {}).get("dataset") or {}
        root = dataset.get("data_root")
        if (dataset.get("type") == "DemoDataset" and root and is_own_folder(root)
                and not osp.exists(osp.join(root, MARKER))):
            return root
    return None
