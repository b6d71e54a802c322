"""The Synapse multi-organ CT layout of TransUNet / Swin-Unet, and the base class of densekit's slice datasets.

Layout (``data_root``)::

    train_npz/case0005_slice000.npz     'image' (H, W) float, CT windowed to [-125, 275] and scaled to [0, 1]
                                        'label' (H, W) class indices 0..8
    test_vol_h5/case0001.npy.h5         'image' (D, H, W), 'label' (D, H, W); same preprocessing
    lists/lists_Synapse/train.txt       one slice name per line (``case0005_slice000``), no suffix
    lists/lists_Synapse/test_vol.txt    one case name per line (``case0001``), no suffix

``SynapseDataset(split='train')`` yields the training slices, ``split='test_vol'`` every axial slice of the
test volumes (slice ``k`` of a volume is ``image[k]``), each carrying ``case_name``, ``slice_index`` and
``num_slices`` so that ``MedicalMetric`` rebuilds the volumes. The h5 files store no voxel spacing: pass
``spacings`` (per case, ``(D, H, W)`` in mm) for HD95 in millimetres, otherwise spacing ``(1, 1, 1)`` is
used and HD95 is in voxels. ``read_synapse_volume`` reads one volume.

Volumes (test split) are read once and kept in a small per-process LRU cache (``cache_size`` volumes), so
the slices of a volume read in order cost one file read.
"""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict
from collections.abc import Callable, Sequence

import h5py
import numpy as np
from mmengine.dataset import BaseDataset

from ...registry import DATASETS, TRANSFORMS
from ..bad_samples import BadSampleMixin
from ..seg.base import default_palette
from .transforms import check_label_range

SYNAPSE_CLASSES = ("background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
                   "spleen", "stomach")
SYNAPSE_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                   [0, 255, 255], [255, 128, 0], [128, 0, 255]]


class VolumeCache:
    """A least-recently-used cache of loaded volumes, keyed by path (one per dataset and worker process)."""

    def __init__(self, maxsize: int | None = 4) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str, load: Callable[[], object]) -> object:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if self.maxsize is None or self.maxsize > 0:
            self._items[key] = value
            while self.maxsize is not None and len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class MedicalSliceDataset(BadSampleMixin, BaseDataset):
    """Base of the 2-D slice datasets over 3-D volumes: class metainfo, a volume cache, arrays in ``get_data_info``.

    Subclasses implement ``load_data_list`` (one dict per slice, no arrays) and ``load_arrays(info) -> (image
    (H, W) float32, label (H, W) or None)``. ``get_data_info`` adds ``img``, ``gt_seg_map``, ``ori_shape``
    and ``img_shape`` to a copy of the item, so pipelines start from arrays (no loading transform).

    Args:
        classes: class names, index ``i`` = label value ``i`` (background first); label values outside
            ``[0, len(classes))`` raise ``ValueError`` naming the file and the values.
        palette: one RGB colour per class (generated when None).
        cache_size: volumes kept in memory per process (None: all).
        on_bad_sample: ``'raise'`` (default) or ``'skip'`` a volume that cannot be used (wrong number of
            dimensions, labels out of range), see ``densekit.datasets.bad_samples``; skips are in ``self.skipped``.
        pipeline, test_mode, indices, serialize_data, lazy_init, max_refetch: as ``mmengine``'s ``BaseDataset``.
    """

    METAINFO: dict = dict()

    def __init__(self, classes: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                 cache_size: int | None = 4, data_root: str = "", pipeline: Sequence[dict | Callable] = (),
                 metainfo: dict | None = None, test_mode: bool = False, indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True, lazy_init: bool = False, max_refetch: int = 1000,
                 on_bad_sample: str = "raise") -> None:
        self._init_bad_samples(on_bad_sample)
        meta = dict(metainfo or {})
        if classes is not None:
            meta["classes"] = classes
        if palette is not None:
            meta["palette"] = palette
        self._cache = VolumeCache(cache_size)
        super().__init__(ann_file="", metainfo=meta, data_root=data_root, indices=indices,
                         serialize_data=serialize_data,
                         pipeline=[TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline],
                         test_mode=test_mode, lazy_init=True, max_refetch=max_refetch)
        self._check_metainfo()
        if not lazy_init:
            self.full_init()

    def _check_metainfo(self) -> None:
        classes = self._metainfo.get("classes")
        if not classes or len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two class names, background first "
                             f"(index i names label value i), got {classes!r}")
        self._metainfo["classes"] = tuple(classes)
        palette = self._metainfo.get("palette") or default_palette(len(classes))
        if len(palette) != len(classes) or any(len(c) != 3 for c in palette):
            raise ValueError(f"palette must hold one RGB triple per class: {len(classes)} classes, "
                             f"got {len(palette)} entries")
        self._metainfo["palette"] = [list(map(int, c)) for c in palette]

    @property
    def num_classes(self) -> int:
        return len(self._metainfo["classes"])

    def load_arrays(self, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        image, label = self.load_arrays(info)
        info["img"] = np.ascontiguousarray(image, dtype=np.float32)
        if label is not None:
            info["gt_seg_map"] = np.ascontiguousarray(label)
        info["ori_shape"] = info["img_shape"] = image.shape[:2]
        return info


def read_synapse_volume(path: str, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image (D, H, W) float32, label (D, H, W) uint8 or None)`` of a ``caseXXXX.npy.h5`` volume; with
    ``num_classes`` the label range is checked."""
    with h5py.File(path, "r") as f:
        if "image" not in f:
            raise KeyError(f"{path} has no 'image' dataset (found {sorted(f.keys())}); Synapse volumes hold "
                           "'image' and 'label' arrays of shape (D, H, W)")
        image = np.asarray(f["image"][:], dtype=np.float32)
        label = np.asarray(f["label"][:]) if "label" in f else None
    if label is not None and num_classes is not None:
        label = check_label_range(label, num_classes, path)
    return image, label


@DATASETS.register_module()
class SynapseDataset(MedicalSliceDataset):
    """Slices of the TransUNet / Swin-Unet Synapse data (see the module docstring for the layout).

    Args:
        data_root: folder holding ``train_npz``, ``test_vol_h5`` and ``lists``.
        split: ``'train'`` (npz slices) or ``'test_vol'`` (every slice of the h5 volumes); any other name is
            read as a list of slices (``.npz``) if ``data_dir`` holds npz files, else of volumes.
        list_dir: folder of the ``{split}.txt`` lists, relative to ``data_root``.
        data_dir: folder of the files, relative to ``data_root``; default ``train_npz`` for npz splits and
            ``test_vol_h5`` for volume splits.
        spacings: voxel spacing ``(D, H, W)`` in mm per case name (volume splits); missing cases get
            ``(1, 1, 1)``.
        classes, palette: default the 9 Synapse classes (background + 8 organs, official label order).
        Other arguments: see ``MedicalSliceDataset``.
    """

    METAINFO = dict(classes=SYNAPSE_CLASSES, palette=SYNAPSE_PALETTE)
    VOLUME_SUFFIX = ".npy.h5"

    def __init__(self, data_root: str = "", split: str = "train", list_dir: str = "lists/lists_Synapse",
                 data_dir: str | None = None, spacings: dict[str, Sequence[float]] | None = None,
                 classes: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                 cache_size: int | None = 4, pipeline: Sequence[dict | Callable] = (),
                 metainfo: dict | None = None, test_mode: bool = False, indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True, lazy_init: bool = False, max_refetch: int = 1000,
                 on_bad_sample: str = "raise") -> None:
        self.split = split
        self.list_dir = list_dir
        self.volumes = split != "train" and (data_dir is None or "npz" not in data_dir)
        self.data_dir = data_dir or ("test_vol_h5" if self.volumes else "train_npz")
        self.spacings = {k: tuple(float(s) for s in v) for k, v in (spacings or {}).items()}
        super().__init__(classes=classes, palette=palette, cache_size=cache_size, data_root=data_root,
                         pipeline=pipeline, metainfo=metainfo, test_mode=test_mode, indices=indices,
                         serialize_data=serialize_data, lazy_init=lazy_init, max_refetch=max_refetch,
                         on_bad_sample=on_bad_sample)

    def _path(self, *parts: str) -> str:
        return osp.join(self.data_root, *parts)

    def _names(self) -> list[str]:
        list_file = self._path(self.list_dir, f"{self.split}.txt")
        if not osp.isfile(list_file):
            raise FileNotFoundError(
                f"Synapse list {list_file} does not exist. The layout of TransUNet/Swin-Unet is "
                f"{self._path('train_npz', 'caseXXXX_sliceNNN.npz')}, {self._path('test_vol_h5', 'caseXXXX.npy.h5')} "
                f"and the lists {self._path(self.list_dir, 'train.txt')} / test_vol.txt (names without suffix).")
        with open(list_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise FileNotFoundError(f"Synapse list {list_file} is empty")
        return names

    def load_data_list(self) -> list[dict]:
        data_list = []
        for name in self._names():
            if not self.volumes:
                path = self._path(self.data_dir, name + ".npz")
                if not osp.isfile(path):
                    raise FileNotFoundError(f"{self.split}.txt lists {name!r} but {path} does not exist")
                data_list.append(dict(img_path=path, seg_map_path=path, case_name=name.split("_slice")[0],
                                      slice_name=name))
                continue
            path = self._path(self.data_dir, name + self.VOLUME_SUFFIX)
            if not osp.isfile(path):
                raise FileNotFoundError(f"{self.split}.txt lists {name!r} but {path} does not exist")
            with h5py.File(path, "r") as f:
                num_slices = int(f["image"].shape[0])
            spacing = self.spacings.get(name, (1.0, 1.0, 1.0))
            data_list.extend(dict(img_path=path, seg_map_path=path, case_name=name, slice_index=k,
                                  num_slices=num_slices, spacing=spacing) for k in range(num_slices))
        return data_list

    def load_arrays(self, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        path = info["img_path"]
        if not self.volumes:
            with np.load(path) as data:
                image, label = np.asarray(data["image"], np.float32), data["label"] if "label" in data else None
            return image, None if label is None else check_label_range(label, self.num_classes, path)
        image, label = self._cache.get(path, lambda: read_synapse_volume(path, self.num_classes))
        k = info["slice_index"]
        return image[k], None if label is None else label[k]
