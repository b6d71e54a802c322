"""Transforms for 2-D medical slices (Swin-Unet / TransUNet recipe) and the intensity and label helpers the
medical datasets share.

Result dicts of the medical datasets (``densekit.datasets.medical.synapse``, ``densekit.datasets.medical.nifti``) hold

- ``img``: ``(H, W)`` float32 slice, intensities already windowed to [0, 1];
- ``gt_seg_map``: ``(H, W)`` uint8 class indices in ``[0, num_classes)`` (absent for unlabelled data);
- ``ori_shape`` / ``img_shape``: ``(H, W)`` of the slice as stored / after resizing;
- ``case_name``, ``slice_index``, ``num_slices``, ``spacing`` ``(D, H, W)`` in mm, ``affine`` (NIfTI only).

Training pipeline of the official Swin-Unet (``datasets/dataset_synapse.py``)::

    [dict(type='RandomGenerator', output_size=(224, 224)), dict(type='PackMedicalInputs')]

Slice-wise validation keeps the label at its stored size (metrics are taken there; ``SwinUnet.predict``
resizes the logits back to ``ori_shape``)::

    [dict(type='ResizeSlice', output_size=(224, 224)), dict(type='PackMedicalInputs')]

The packed ``inputs`` is a float ``(1, H, W)`` tensor in [0, 1]; the model's data preprocessor is
``SegDataPreProcessor(mean=[0.0], std=[1.0], bgr_to_rgb=False)`` (an identity normalisation that stacks
and pads). Randomness comes from numpy's global generator, which mmengine seeds in every worker.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.structures import PixelData
from scipy import ndimage

from ...registry import TRANSFORMS
from ...structures import SegDataSample
from ..bad_samples import BadSampleError
from ..loading import set_packed_metainfo

# TransUNet / Swin-Unet preprocessing of abdominal CT: clip HU to [-125, 275], then scale to [0, 1].
CT_WINDOW = (-125.0, 275.0)
# MR has no absolute intensity scale: clip each volume to its own 0.5th..99.5th percentiles.
MR_PERCENTILES = (0.5, 99.5)
WINDOW_PRESETS = {"ct": ("fixed", CT_WINDOW), "mr": ("percentile", MR_PERCENTILES)}


# -- intensities and labels -----------------------------------------------------------------------------
def resolve_window(window: str | Sequence[float] | None, window_mode: str | None = None
                   ) -> tuple[str, tuple[float, float]] | None:
    """``('fixed' | 'percentile', (lo, hi))`` from a preset name (``'ct'``, ``'mr'``) or a pair plus its mode
    (``'fixed'`` by default); None means no windowing (intensities are used as stored)."""
    if window is None:
        return None
    if isinstance(window, str):
        if window.lower() not in WINDOW_PRESETS:
            raise ValueError(f"unknown intensity window preset {window!r}; choose from {sorted(WINDOW_PRESETS)} "
                             "or pass a (low, high) pair")
        mode, bounds = WINDOW_PRESETS[window.lower()]
        return window_mode or mode, bounds
    bounds = tuple(float(v) for v in window)
    mode = window_mode or "fixed"
    if len(bounds) != 2 or bounds[0] >= bounds[1]:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    if mode not in ("fixed", "percentile"):
        raise ValueError(f"window_mode must be 'fixed' or 'percentile', got {mode!r}")
    if mode == "percentile" and not 0 <= bounds[0] < bounds[1] <= 100:
        raise ValueError(f"percentile window must lie in [0, 100], got {window}")
    return mode, bounds


def window_intensity(volume: np.ndarray, window: str | Sequence[float] | None = "ct",
                     window_mode: str | None = None) -> np.ndarray:
    """Clip ``volume`` to an intensity window and scale it to [0, 1] (float32).

    ``window``: ``'ct'`` (HU in [-125, 275], the TransUNet/Swin-Unet preprocessing), ``'mr'`` (the volume's
    own 0.5..99.5 percentiles), a ``(low, high)`` pair read as intensities (``window_mode='fixed'``) or as
    percentiles of this volume (``window_mode='percentile'``), or None (returned as float32, unscaled).
    A constant volume (``high == low`` after the percentiles) maps to zeros.
    """
    volume = np.asarray(volume, dtype=np.float32)
    resolved = resolve_window(window, window_mode)
    if resolved is None:
        return volume
    mode, (lo, hi) = resolved
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(volume, (lo, hi)))
    if hi <= lo:
        return np.zeros_like(volume)
    return ((np.clip(volume, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def check_label_range(label: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """``label`` as uint8 (int16 beyond 255 classes), or ``BadSampleError`` (a ``ValueError``) naming ``source``
    and the values outside ``{0, ..., num_classes - 1}`` (non-integer values included)."""
    label = np.asarray(label)
    values = np.unique(label)
    bad = values[(values < 0) | (values >= num_classes) | (values != np.round(values))]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:20]) + (" ..." if bad.size > 20 else "")
        raise BadSampleError(f"{source}: label values {{{shown}}} are outside the class range 0..{num_classes - 1} "
                         f"({num_classes} classes); all values in the file: {[float(v) for v in values[:30]]}")
    return label.astype(np.uint8 if num_classes <= 256 else np.int16)


# -- augmentation and resizing --------------------------------------------------------------------------
def resize_slice(array: np.ndarray, size: Sequence[int], order: int) -> np.ndarray:
    """``(H, W)`` -> ``size`` with ``scipy.ndimage.zoom`` (spline ``order``: 3 cubic for images, 0 nearest for
    labels), as the official code resizes; unchanged when already at ``size``."""
    h, w = array.shape[:2]
    if (h, w) == tuple(size):
        return array
    return ndimage.zoom(array, (size[0] / h, size[1] / w), order=order)


@TRANSFORMS.register_module()
class RandomGenerator:
    """The official Swin-Unet training augmentation (``RandomGenerator`` in ``datasets/dataset_synapse.py``).

    With probability ``rot_flip_prob`` (0.5): ``np.rot90`` by ``k ~ U{0..3}`` quarter turns, then a flip along
    a random axis (0 or 1). Otherwise, with probability ``rotate_prob`` (0.5, so 0.25 overall): a rotation by
    an integer angle in ``[-max_angle, max_angle)`` degrees (``np.random.randint(-20, 20)``, as the official
    code) with ``scipy.ndimage.rotate(reshape=False)``, which fills the corners with 0. Labels always rotate
    with nearest neighbour (``order=0``); the image uses ``image_rotate_order``, 0 as in the official code
    (3 gives a smoother image). Finally both are resized to ``output_size`` ``(H, W)`` with ``scipy.ndimage.zoom``:
    order 3 (cubic) for the image, order 0 (nearest) for the label, the official interpolations.

    The official code draws the two branch decisions from Python's ``random``; here every draw comes from
    numpy's generator, so one seed drives the whole pipeline. Sets ``img_shape``; ``ori_shape`` is kept.
    """

    def __init__(self, output_size: Sequence[int] = (224, 224), rot_flip_prob: float = 0.5,
                 rotate_prob: float = 0.5, max_angle: int = 20, image_rotate_order: int = 0) -> None:
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.rot_flip_prob = rot_flip_prob
        self.rotate_prob = rotate_prob
        self.max_angle = int(max_angle)
        self.image_rotate_order = image_rotate_order

    @staticmethod
    def rot_flip(image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        k = np.random.randint(0, 4)
        axis = np.random.randint(0, 2)
        image = np.flip(np.rot90(image, k), axis=axis).copy()
        if label is not None:
            label = np.flip(np.rot90(label, k), axis=axis).copy()
        return image, label

    def rotate(self, image: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        angle = np.random.randint(-self.max_angle, self.max_angle)
        image = ndimage.rotate(image, angle, order=self.image_rotate_order, reshape=False)
        if label is not None:
            label = ndimage.rotate(label, angle, order=0, reshape=False)
        return image, label

    def __call__(self, results: dict) -> dict:
        image, label = results["img"], results.get("gt_seg_map")
        if np.random.rand() < self.rot_flip_prob:
            image, label = self.rot_flip(image, label)
        elif np.random.rand() < self.rotate_prob:
            image, label = self.rotate(image, label)
        results["img"] = resize_slice(image, self.output_size, order=3).astype(np.float32)
        if label is not None:
            results["gt_seg_map"] = resize_slice(label, self.output_size, order=0)
        results["img_shape"] = self.output_size
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(output_size={self.output_size}, rot_flip_prob={self.rot_flip_prob}, "
                f"rotate_prob={self.rotate_prob}, max_angle={self.max_angle}, "
                f"image_rotate_order={self.image_rotate_order})")


@TRANSFORMS.register_module()
class ResizeSlice:
    """Resize the image to ``output_size`` ``(H, W)`` with ``scipy.ndimage.zoom`` (``image_order`` 3, cubic, as
    the official test code). The label is resized (nearest) only with ``resize_label=True``; by default it
    stays at ``ori_shape``, where slice-wise metrics are taken. Sets ``img_shape``."""

    def __init__(self, output_size: Sequence[int] = (224, 224), image_order: int = 3,
                 resize_label: bool = False) -> None:
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.image_order = image_order
        self.resize_label = resize_label

    def __call__(self, results: dict) -> dict:
        results["img"] = resize_slice(results["img"], self.output_size, self.image_order).astype(np.float32)
        if self.resize_label and results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = resize_slice(results["gt_seg_map"], self.output_size, order=0)
        results["img_shape"] = self.output_size
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(output_size={self.output_size}, image_order={self.image_order}, "
                f"resize_label={self.resize_label})")


MEDICAL_META_KEYS = ("img_path", "seg_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
                     "flip_direction", "case_name", "slice_index", "num_slices", "spacing", "affine")


@TRANSFORMS.register_module()
class PackMedicalInputs:
    """``{'inputs': float32 (1, H, W) tensor, 'data_samples': SegDataSample}`` from a medical result dict.

    ``gt_sem_seg`` is ``PixelData(data=(1, H, W) int64)`` when a label was loaded. The metainfo holds the
    ``meta_keys`` present (the case and slice keys ``MedicalMetric`` uses to rebuild volumes), with
    ``pad_shape`` defaulting to ``img_shape``, ``scale_factor`` to ``(1.0, 1.0)`` and ``flip`` to False.
    """

    def __init__(self, meta_keys: Sequence[str] = MEDICAL_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        img = np.asarray(results["img"], dtype=np.float32)
        if img.ndim != 2:
            raise ValueError(f"PackMedicalInputs expects a (H, W) slice, got shape {img.shape}")
        sample = SegDataSample()
        if results.get("gt_seg_map") is not None:
            seg = np.asarray(results["gt_seg_map"])
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(seg.astype(np.int64)[None]))
        results.setdefault("img_shape", img.shape)
        results.setdefault("ori_shape", img.shape)
        set_packed_metainfo(sample, results, self.meta_keys, img.shape)
        return {"inputs": torch.from_numpy(np.ascontiguousarray(img)[None]), "data_samples": sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(meta_keys={self.meta_keys})"
