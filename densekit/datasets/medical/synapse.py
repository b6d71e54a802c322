"""The Synapse multi-organ CT layout of TransUNet / Swin-Unet as 2-D slices.

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
from collections.abc import Callable, Sequence

import numpy as np

from ...registry import DATASETS
from .base import MedicalSliceDataset
from .io import h5_depth, read_h5_volume
from .transforms import check_label_range

SYNAPSE_CLASSES = ("background", "aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
                   "spleen", "stomach")
SYNAPSE_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                   [0, 255, 255], [255, 128, 0], [128, 0, 255]]


def read_synapse_volume(path: str, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image (D, H, W) float32, label (D, H, W) uint8 or None)`` of a ``caseXXXX.npy.h5`` volume; with
    ``num_classes`` the label range is checked."""
    image, _ = read_h5_volume(path, "image")
    label, _ = read_h5_volume(path, "label", dtype=None, missing_ok=True)
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

    def check_layout(self) -> None:
        """Raise ``FileNotFoundError`` naming the TransUNet/Swin-Unet layout when the split's list or its data
        folder is missing. Cheap (reads one list file), so tools call it on a ``lazy_init`` dataset before
        building a model."""
        self._names()
        folder = self._path(self.data_dir)
        if not osp.isdir(folder):
            raise FileNotFoundError(f"Synapse data folder {folder} does not exist; {self.split}.txt names files "
                                    f"in it ({'caseXXXX.npy.h5' if self.volumes else 'caseXXXX_sliceNNN.npz'})")

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
            num_slices = h5_depth(path)
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
