"""NIfTI volumes as 2-D axial slices: the Medical Segmentation Decathlon layout, or explicit file lists.

MSD layout (``data_root``)::

    dataset.json      "labels": {"0": "background", "1": "left atrium"}   (nnU-Net v2's {"background": 0} too)
                      "training": [{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}]
    imagesTr/*.nii.gz
    labelsTr/*.nii.gz

Without ``dataset.json``, ``imagesTr``/``labelsTr`` are paired by file name (nnU-Net's ``_0000`` channel
suffix is dropped to find the label). Any pair of files works too: ``images=[...], labels=[...]``.

**Axis convention.** A volume is the array nibabel returns (``np.asanyarray(img.dataobj)``, shape
``(X, Y, Z)`` in voxel order, no reorientation). Axial slices are taken along the *last* axis: slice ``k``
is ``array[:, :, k]``, an ``(X, Y)`` image (rows = first voxel axis). densekit's volume layout is therefore
``(D, H, W) = (Z, X, Y)`` = ``array.transpose(2, 0, 1)``, with spacing ``(D, H, W) = (zooms[2], zooms[0],
zooms[1])`` in mm (``densekit.datasets.medical.io.load_nifti``); ``io.save_nifti`` transposes back, so
predictions line up with the source affine. The last voxel axis is axial for the usual CT/MR storage (MSD,
BTCV); a dataset whose affine says otherwise gets a warning.

Intensities are windowed per volume on load (``window_intensity``): CT by default (HU clipped to
[-125, 275], then scaled to [0, 1], the TransUNet/Swin-Unet preprocessing), ``window='mr'`` for the volume's
own 0.5..99.5 percentiles, or any ``(low, high)`` pair with ``window_mode='fixed' | 'percentile'``.
Windowed volumes are cached per process (``cache_size`` volumes, LRU), so the slices of a volume cost one
decompression. Each slice's metainfo keeps ``spacing`` and ``affine`` (the source's 4x4, as nested lists).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import warnings
from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np

from ...registry import DATASETS
from ..bad_samples import BadSampleError
from .base import MedicalSliceDataset
from .io import NIFTI_SUFFIXES, case_name, check_nifti_shape, load_nifti, nifti_spacing_dhw
from .transforms import check_label_range, resolve_window, window_intensity


def read_dataset_json(path: str) -> tuple[list[str] | None, list[tuple[str, str | None]]]:
    """Class names (index order) and ``(image, label)`` paths of the ``training`` entries of an MSD
    ``dataset.json`` (paths resolved against its folder)."""
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    root = osp.dirname(path)
    classes = None
    labels = meta.get("labels")
    if labels:
        if all(str(k).isdigit() for k in labels):  # MSD: {"0": "background", ...}
            index = {int(k): str(v) for k, v in labels.items()}
        else:  # nnU-Net v2: {"background": 0, ...} (region lists are not supported)
            index = {int(v): str(k) for k, v in labels.items()}
        if sorted(index) != list(range(len(index))):
            raise ValueError(f"{path}: label values must be 0..K-1, got {sorted(index)}")
        classes = [index[i] for i in range(len(index))]
    pairs = []
    for entry in meta.get("training", []):
        image = osp.normpath(osp.join(root, entry["image"]))
        label = osp.normpath(osp.join(root, entry["label"])) if entry.get("label") else None
        pairs.append((image, label))
    return classes, pairs


def _join(root: str, path: str | None) -> str | None:
    return path if path is None or osp.isabs(path) or not root else osp.join(root, path)


def _pair_folders(root: str) -> list[tuple[str, str | None]]:
    """``imagesTr`` / ``labelsTr`` paired by name (MSD's hidden ``._`` files skipped)."""
    image_dir, label_dir = osp.join(root, "imagesTr"), osp.join(root, "labelsTr")
    if not osp.isdir(image_dir):
        raise FileNotFoundError(f"{root} has neither dataset.json nor imagesTr/: the Medical Segmentation "
                                "Decathlon layout is imagesTr/*.nii.gz, labelsTr/*.nii.gz and dataset.json")
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        if name.startswith(".") or not name.endswith(NIFTI_SUFFIXES):
            continue
        label = None
        for candidate in (name, name.replace("_0000.nii", ".nii")):
            if osp.isfile(osp.join(label_dir, candidate)):
                label = osp.join(label_dir, candidate)
                break
        pairs.append((osp.join(image_dir, name), label))
    return pairs


@DATASETS.register_module()
class NiftiSliceDataset(MedicalSliceDataset):
    """Axial slices of NIfTI volumes (see the module docstring for layouts and the axis convention).

    Args:
        data_root: an MSD task folder (``dataset.json``, ``imagesTr``, ``labelsTr``), or the folder that
            relative ``images``/``labels`` paths start from.
        images, labels: explicit volume files (``.nii`` / ``.nii.gz``) instead of the MSD layout; ``labels``
            parallel to ``images``, or None for unlabelled volumes (inference).
        dataset_json: file name of the MSD description inside ``data_root``.
        cases: keep only these case names (file names without suffix), in this order, e.g. a fold.
        classes: class names, background first; default the ``labels`` of ``dataset.json``.
        window, window_mode: intensity window, see ``window_intensity`` (default ``'ct'``: [-125, 275] HU;
            ``'mr'``: per-volume 0.5..99.5 percentiles).
        channel: which channel of 4-D images to use (multi-modal MSD tasks).
        Other arguments: see ``MedicalSliceDataset``.
    """

    def __init__(self, data_root: str = "", images: Sequence[str] | None = None,
                 labels: Sequence[str | None] | None = None, dataset_json: str = "dataset.json",
                 cases: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, window: str | Sequence[float] | None = "ct",
                 window_mode: str | None = None, channel: int | None = None, cache_size: int | None = 4,
                 pipeline: Sequence[dict | Callable] = (), metainfo: dict | None = None, test_mode: bool = False,
                 indices: int | Sequence[int] | None = None, serialize_data: bool = True, lazy_init: bool = False,
                 max_refetch: int = 1000, on_bad_sample: str = "raise") -> None:
        resolve_window(window, window_mode)  # fail on a bad window before reading anything
        self.window, self.window_mode, self.channel = window, window_mode, channel
        json_classes, self.pairs = self._find_pairs(data_root, images, labels, dataset_json)
        if cases is not None:
            by_name = {case_name(image): (image, label) for image, label in self.pairs}
            missing = [c for c in cases if c not in by_name]
            if missing:
                raise KeyError(f"cases {missing} are not in the dataset (it has {sorted(by_name)[:10]} ...)")
            self.pairs = [by_name[c] for c in cases]
        if classes is None and (metainfo or {}).get("classes") is None:
            classes = json_classes
        super().__init__(classes=classes, palette=palette, cache_size=cache_size, data_root=data_root,
                         pipeline=pipeline, metainfo=metainfo, test_mode=test_mode, indices=indices,
                         serialize_data=serialize_data, lazy_init=lazy_init, max_refetch=max_refetch,
                         on_bad_sample=on_bad_sample)

    @staticmethod
    def _find_pairs(root: str, images: Sequence[str] | None, labels: Sequence[str | None] | None,
                    dataset_json: str) -> tuple[list[str] | None, list[tuple[str, str | None]]]:
        if images is not None:
            if labels is not None and len(labels) != len(images):
                raise ValueError(f"{len(images)} images but {len(labels)} labels")
            labels = labels if labels is not None else [None] * len(images)
            return None, [(_join(root, i), _join(root, lb)) for i, lb in zip(images, labels)]
        json_path = osp.join(root, dataset_json)
        if osp.isfile(json_path):
            return read_dataset_json(json_path)
        return None, _pair_folders(root)

    def check_layout(self) -> None:
        """Raise ``FileNotFoundError`` when there is no volume or a listed file is missing. Cheap (no volume is
        read), so tools call it on a ``lazy_init`` dataset before building a model."""
        if not self.pairs:
            raise FileNotFoundError(f"NiftiSliceDataset found no volumes under {self.data_root!r}: the Medical "
                                    "Segmentation Decathlon layout is imagesTr/*.nii.gz, labelsTr/*.nii.gz (same "
                                    "names) and optionally dataset.json")
        for image_path, label_path in self.pairs:
            for path in (image_path, label_path):
                if path is not None and not osp.isfile(path):
                    raise FileNotFoundError(f"volume {path} does not exist (NiftiSliceDataset, data_root="
                                            f"{self.data_root!r})")

    def load_data_list(self) -> list[dict]:
        if not self.pairs:
            self.check_layout()
        data_list, oblique = [], []
        for image_path, label_path in self.pairs:
            try:
                img = self._open_pair(image_path, label_path)
            except (BadSampleError, OSError) as error:
                self.bad_sample(image_path, str(error), type(error))
                continue
            shape = img.shape[:3]
            if nib.aff2axcodes(img.affine)[2] not in ("S", "I"):
                oblique.append(case_name(image_path))
            spacing = nifti_spacing_dhw(img.header.get_zooms()[:3])
            affine = np.asarray(img.affine, np.float64).tolist()
            data_list.extend(dict(img_path=image_path, seg_map_path=label_path, case_name=case_name(image_path),
                                  slice_index=k, num_slices=int(shape[2]), spacing=spacing, affine=affine)
                             for k in range(shape[2]))
        if not data_list:
            raise FileNotFoundError(f"NiftiSliceDataset is empty: all {len(self.pairs)} volumes were skipped "
                                    f"({next(iter(self.skipped.values()))})")
        if oblique:
            warnings.warn(f"the last voxel axis of {oblique[:5]} is not superior-inferior (affine axis codes); "
                          "densekit slices along it anyway (see the axis convention in "
                          "densekit.datasets.medical.nifti)",
                          stacklevel=2)
        return data_list

    def _open_pair(self, image_path: str, label_path: str | None):
        """The image's nibabel header object, after checking both files exist and have fitting shapes."""
        for path in (image_path, label_path):
            if path is not None and not osp.isfile(path):
                raise FileNotFoundError(f"volume {path} does not exist")
        img = nib.load(image_path)
        check_nifti_shape(image_path, img.shape, self.channel)
        if label_path is not None:
            label_shape = nib.load(label_path).shape
            check_nifti_shape(label_path, label_shape, None)
            if label_shape != img.shape[:3]:
                raise BadSampleError(f"label {label_path} has shape {label_shape} but image {image_path} has "
                                     f"{img.shape}; expected the image's (X, Y, Z) {img.shape[:3]}")
        return img

    def load_volume(self, image_path: str, label_path: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Windowed image and checked label of one case, ``(D, H, W)`` each (uncached)."""
        image, _, _ = load_nifti(image_path, channel=self.channel)
        image = window_intensity(image, self.window, self.window_mode)
        label = None
        if label_path is not None:
            label, _, _ = load_nifti(label_path, dtype=None)
            label = check_label_range(label, self.num_classes, label_path)
        return image, label

    def load_arrays(self, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        image, label = self._cache.get(info["img_path"],
                                       lambda: self.load_volume(info["img_path"], info["seg_map_path"]))
        k = info["slice_index"]
        return image[k], None if label is None else label[k]
