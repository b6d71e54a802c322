"""Segmentation data transforms (OpenCV + numpy) reproducing mmcv 2.x / mmsegmentation 1.x semantics.

Each transform is a small class registered in ``TRANSFORMS`` whose ``__call__(results) -> results``
works on mmcv-style result dicts:

- ``img``: ``(H, W, 3)`` uint8, BGR (as ``cv2.imread`` returns it);
- ``gt_seg_map``: ``(H, W)`` uint8 label map, 255 = ignore (plus any key listed in ``seg_fields``);
- ``ori_shape`` / ``img_shape`` / ``pad_shape``: ``(H, W)`` of the file / after resizing or cropping
  / after padding; ``scale_factor``: ``(w_scale, h_scale)``; ``flip``, ``flip_direction``.

Randomness comes from numpy's global generator (``np.random``), as in mmcv and mmseg, so mmengine's
``randomness=dict(seed=...)`` (which seeds numpy, ``random`` and torch, and every dataloader worker)
makes runs reproducible.

A typical mmseg ADE20K training pipeline, with densekit names::

    [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
     dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
     dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75), dict(type='RandomFlip', prob=0.5),
     dict(type='PhotoMetricDistortion'), dict(type='PackSegInputs')]

and its test pipeline ``LoadImageFromFile, Resize(scale=(2048, 512), keep_ratio=True), LoadAnnotations,
PackSegInputs`` (annotations loaded after the resize stay at the original size, where metrics are taken).

``LoadImageFromFile`` and the packing helpers, shared with detection and the medical slices, are in
``densekit.datasets.loading``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from mmengine.structures import PixelData

from ...registry import TRANSFORMS
from ...structures import SegDataSample
from ..bad_samples import BadSampleError
from ..loading import image_to_tensor, read_image_file, rescale_size, set_packed_metainfo


def _seg_keys(results: dict) -> list[str]:
    """Label maps to transform like the image: ``gt_seg_map`` and every key in ``seg_fields``."""
    keys = list(results.get("seg_fields", []))
    if "gt_seg_map" in results and "gt_seg_map" not in keys:
        keys.append("gt_seg_map")
    return [k for k in keys if results.get(k) is not None]


def check_mask(seg: np.ndarray, path: str, results: dict) -> None:
    """Raise ``BadSampleError`` if the mask does not match the image's size (``ori_shape``) or holds a
    label value ``>= num_classes`` other than ``ignore_index`` (both read from ``results``, where the
    dataset puts them)."""
    shape = results.get("ori_shape")
    if shape is not None and tuple(seg.shape[:2]) != tuple(shape):
        raise BadSampleError(f"mask {path} is {seg.shape[0]}x{seg.shape[1]} (HxW) but its image "
                             f"{results.get('img_path')} is {shape[0]}x{shape[1]}; they must have the same size")
    num_classes = results.get("num_classes")
    if num_classes is None:
        return
    ignore = results.get("ignore_index", 255)
    bad = (seg >= num_classes) & (seg != ignore)
    if bad.any():
        values = np.unique(seg[bad])
        shown = ", ".join(map(str, values[:8].tolist())) + (" ..." if len(values) > 8 else "")
        raise BadSampleError(f"mask {path} has label values {{{shown}}} (after reduce_zero_label="
                             f"{bool(results.get('reduce_zero_label'))}) but the dataset has {num_classes} classes: "
                             f"expected 0..{num_classes - 1} or the ignore value {ignore}")


@TRANSFORMS.register_module()
class LoadAnnotations:
    """Read ``results['seg_map_path']`` unchanged into ``gt_seg_map`` ``(H, W)`` uint8 (mmseg's
    ``LoadAnnotations``).

    ``reduce_zero_label`` (from the argument, else from ``results``, as the dataset sets it) maps 0 to
    255 and every other value ``v`` to ``v - 1``; 255 stays 255. A 3-channel mask (class ids replicated
    across channels, e.g. REFUGE) keeps its first channel. A mask of another size than its image, a
    16-bit mask with values above 255, or values ``>= num_classes`` (other than ``ignore_index``; both
    from the dataset's items) raise ``BadSampleError`` naming the file.
    """

    def __init__(self, reduce_zero_label: bool | None = None) -> None:
        self.reduce_zero_label = reduce_zero_label

    def __call__(self, results: dict) -> dict:
        path = results["seg_map_path"]
        seg = read_image_file(path, "mask")
        if seg.ndim == 3:
            seg = seg[..., 0]
        if seg.dtype != np.uint8:
            if not np.issubdtype(seg.dtype, np.integer) or seg.min() < 0 or seg.max() > 255:
                raise BadSampleError(f"mask {path} has {seg.dtype} values {seg.min()}..{seg.max()}; "
                                     "expected class ids 0..255 (an 8-bit PNG)")
            seg = seg.astype(np.uint8)
        reduce = self.reduce_zero_label
        if reduce is None:
            reduce = bool(results.get("reduce_zero_label", False))
        elif "reduce_zero_label" in results and results["reduce_zero_label"] != reduce:
            raise ValueError(f"LoadAnnotations(reduce_zero_label={reduce}) disagrees with the dataset's "
                             f"reduce_zero_label={results['reduce_zero_label']}; set it in one place")
        if reduce:
            seg = reduce_zero_label(seg)
        check_mask(seg, path, dict(results, reduce_zero_label=reduce))
        results["gt_seg_map"] = seg
        results["reduce_zero_label"] = reduce
        results.setdefault("seg_fields", [])
        if "gt_seg_map" not in results["seg_fields"]:
            results["seg_fields"].append("gt_seg_map")
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduce_zero_label={self.reduce_zero_label})"


def reduce_zero_label(seg: np.ndarray) -> np.ndarray:
    """mmseg's mapping without uint8 underflow: 0 -> 255, v -> v - 1 for 1 <= v <= 254, 255 -> 255."""
    out = seg.copy()
    out[seg == 0] = 255
    out = out - 1
    out[out == 254] = 255
    return out


@TRANSFORMS.register_module()
class Resize:
    """mmcv ``Resize``: the image bilinearly, label maps with nearest neighbour.

    ``scale`` is ``(w, h)`` (mmcv order). With ``keep_ratio`` the image is rescaled by
    ``min(max(scale) / max(h, w), min(scale) / min(h, w))`` (so ``(2048, 512)`` means "short side 512,
    long side at most 2048"); otherwise it is resized to exactly ``scale``. Sets ``img_shape``,
    ``scale_factor = (new_w / w, new_h / h)`` and ``keep_ratio``.
    """

    def __init__(self, scale: tuple[int, int] | int, keep_ratio: bool = True) -> None:
        self.scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
        self.keep_ratio = keep_ratio

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        if self.keep_ratio:
            size, _ = rescale_size(h, w, self.scale)
        else:
            size = (int(self.scale[0]), int(self.scale[1]))
        results["img"] = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        for key in _seg_keys(results):
            results[key] = cv2.resize(results[key], size, interpolation=cv2.INTER_NEAREST)
        results["img_shape"] = results["img"].shape[:2]
        results["scale"] = self.scale
        results["scale_factor"] = (size[0] / w, size[1] / h)
        results["keep_ratio"] = self.keep_ratio
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, keep_ratio={self.keep_ratio})"


@TRANSFORMS.register_module()
class RandomResize:
    """mmcv ``RandomResize`` with a ``ratio_range``: target scale ``(int(w * r), int(h * r))`` with
    ``r ~ U(ratio_range)`` (``np.random.random_sample``), then ``Resize(target, keep_ratio)``.

    Without ``ratio_range``, ``scale`` is a list of ``(w, h)`` pairs and each edge is drawn uniformly
    (integers) between the smallest and largest listed value, as mmcv does.
    """

    def __init__(self, scale: tuple[int, int] | list[tuple[int, int]] = (2048, 512),
                 ratio_range: tuple[float, float] | None = (0.5, 2.0), keep_ratio: bool = True) -> None:
        if ratio_range is None and not (isinstance(scale, list) and len(scale) >= 1):
            raise ValueError("RandomResize needs ratio_range, or scale as a list of (w, h) pairs")
        if ratio_range is not None and ratio_range[0] > ratio_range[1]:
            raise ValueError(f"ratio_range {ratio_range} must be (min, max)")
        self.scale = scale
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio

    def _random_scale(self) -> tuple[int, int]:
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = np.random.random_sample() * (hi - lo) + lo
            return int(self.scale[0] * ratio), int(self.scale[1] * ratio)
        edges0 = [s[0] for s in self.scale]
        edges1 = [s[1] for s in self.scale]
        return (int(np.random.randint(min(edges0), max(edges0) + 1)),
                int(np.random.randint(min(edges1), max(edges1) + 1)))

    def __call__(self, results: dict) -> dict:
        return Resize(self._random_scale(), keep_ratio=self.keep_ratio)(results)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range}, "
                f"keep_ratio={self.keep_ratio})")


@TRANSFORMS.register_module()
class RandomCrop:
    """mmseg ``RandomCrop``: a random ``crop_size = (h, w)`` window (smaller images are kept whole
    along that axis; padding is left to ``Pad`` or the data preprocessor).

    With ``cat_max_ratio < 1`` it draws up to 10 more windows until one holds at least two labelled
    classes and its most frequent class covers less than ``cat_max_ratio`` of the labelled (not
    ``ignore_index``) pixels; after 10 failed tries the last window drawn is used, as in mmseg.
    """

    def __init__(self, crop_size: tuple[int, int] | int = (512, 512), cat_max_ratio: float = 1.0,
                 ignore_index: int = 255) -> None:
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if self.crop_size[0] <= 0 or self.crop_size[1] <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _random_bbox(self, h: int, w: int) -> tuple[int, int, int, int]:
        margin_h = max(h - self.crop_size[0], 0)
        margin_w = max(w - self.crop_size[1], 0)
        y1 = np.random.randint(0, margin_h + 1)
        x1 = np.random.randint(0, margin_w + 1)
        return y1, y1 + self.crop_size[0], x1, x1 + self.crop_size[1]

    def _ok(self, seg: np.ndarray) -> bool:
        labels, counts = np.unique(seg, return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def crop_bbox(self, results: dict) -> tuple[int, int, int, int]:
        """``(y1, y2, x1, x2)`` of the window to keep."""
        h, w = results["img"].shape[:2]
        bbox = self._random_bbox(h, w)
        if self.cat_max_ratio < 1.0 and results.get("gt_seg_map") is not None:
            for _ in range(10):
                y1, y2, x1, x2 = bbox
                if self._ok(results["gt_seg_map"][y1:y2, x1:x2]):
                    break
                bbox = self._random_bbox(h, w)
        return bbox

    def __call__(self, results: dict) -> dict:
        y1, y2, x1, x2 = self.crop_bbox(results)
        results["img"] = results["img"][y1:y2, x1:x2, ...]
        for key in _seg_keys(results):
            results[key] = results[key][y1:y2, x1:x2]
        results["img_shape"] = results["img"].shape[:2]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


@TRANSFORMS.register_module()
class RandomFlip:
    """mmcv ``RandomFlip`` with one direction: flip image and label maps together with probability
    ``prob``; sets ``flip`` and ``flip_direction`` (None when not flipped)."""

    def __init__(self, prob: float = 0.5, direction: str = "horizontal") -> None:
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.prob = prob
        self.direction = direction

    def __call__(self, results: dict) -> dict:
        flip = bool(np.random.random_sample() < self.prob)
        if flip:
            axis = 1 if self.direction == "horizontal" else 0
            results["img"] = np.ascontiguousarray(np.flip(results["img"], axis=axis))
            for key in _seg_keys(results):
                results[key] = np.ascontiguousarray(np.flip(results[key], axis=axis))
        results["flip"] = flip
        results["flip_direction"] = self.direction if flip else None
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob}, direction={self.direction!r})"


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion`` on a uint8 BGR image; each step happens with probability 1/2:

    1. brightness: add ``U(-brightness_delta, brightness_delta)``;
    2. with ``mode = randint(2)``: contrast (multiply by ``U(contrast_range)``) here when mode is 1;
    3. saturation: HSV ``S`` multiplied by ``U(saturation_range)``;
    4. hue: HSV ``H`` shifted by ``randint(-hue_delta, hue_delta)`` modulo 180 (OpenCV's uint8 hue);
    5. contrast here when mode is 0.

    Every step clips to [0, 255] and rounds down to uint8, as mmseg's ``convert``.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        img = img.astype(np.float32) * alpha + beta
        return np.clip(img, 0, 255).astype(np.uint8)

    def brightness(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            return self.convert(img, beta=np.random.uniform(-self.brightness_delta, self.brightness_delta))
        return img

    def contrast(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            return self.convert(img, alpha=np.random.uniform(self.contrast_lower, self.contrast_upper))
        return img

    def saturation(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            alpha = np.random.uniform(self.saturation_lower, self.saturation_upper)
            hsv[:, :, 1] = self.convert(hsv[:, :, 1], alpha=alpha)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def hue(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            shift = np.random.randint(-self.hue_delta, self.hue_delta)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + shift) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def __call__(self, results: dict) -> dict:
        img = self.brightness(results["img"])
        mode = np.random.randint(2)
        if mode == 1:
            img = self.contrast(img)
        img = self.saturation(img)
        img = self.hue(img)
        if mode == 0:
            img = self.contrast(img)
        results["img"] = img
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(brightness_delta={self.brightness_delta}, contrast_range="
                f"({self.contrast_lower}, {self.contrast_upper}), saturation_range=({self.saturation_lower}, "
                f"{self.saturation_upper}), hue_delta={self.hue_delta})")


@TRANSFORMS.register_module()
class Pad:
    """mmcv ``Pad``: pad right and bottom to ``size = (w, h)`` (mmcv order) or to a multiple of
    ``size_divisor``; the image with ``pad_val``, label maps with ``seg_pad_val`` (ignored).

    Sets ``pad_shape`` ``(H, W)``; ``img_shape`` keeps the unpadded size, so the valid region stays
    known. Larger images are left as they are. The data preprocessor pads batches too; this is for
    explicit pipelines.
    """

    def __init__(self, size: tuple[int, int] | None = (512, 512), size_divisor: int | None = None,
                 pad_val: int = 0, seg_pad_val: int = 255) -> None:
        if (size is None) == (size_divisor is None):
            raise ValueError("Pad needs exactly one of size and size_divisor")
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def _target(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return max(self.size[1], h), max(self.size[0], w)
        d = self.size_divisor
        return -(-h // d) * d, -(-w // d) * d

    def __call__(self, results: dict) -> dict:
        h, w = results["img"].shape[:2]
        th, tw = self._target(h, w)
        border = dict(top=0, bottom=th - h, left=0, right=tw - w, borderType=cv2.BORDER_CONSTANT)
        img = results["img"]
        results["img"] = cv2.copyMakeBorder(img, value=(self.pad_val,) * 4, **border)
        if img.ndim == 3 and results["img"].ndim == 2:  # OpenCV drops a single channel axis
            results["img"] = results["img"][..., None]
        for key in _seg_keys(results):
            results[key] = cv2.copyMakeBorder(results[key], value=(self.seg_pad_val,) * 4, **border)
        results["pad_shape"] = (th, tw)
        results["pad_fixed_size"] = self.size
        results["pad_size_divisor"] = self.size_divisor
        return results

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, size_divisor={self.size_divisor}, "
                f"pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val})")


@TRANSFORMS.register_module()
class PackSegInputs:
    """mmseg ``PackSegInputs``: ``{'inputs': uint8 (3, H, W) tensor, 'data_samples': SegDataSample}``.

    ``gt_sem_seg`` is ``PixelData(data=(1, H, W) int64)`` when a mask was loaded. The sample's metainfo
    holds ``meta_keys`` found in ``results``; ``pad_shape`` defaults to ``img_shape``, ``scale_factor``
    to ``(1.0, 1.0)`` and ``flip``/``flip_direction`` to ``False``/``None`` when no transform set them,
    so every sample carries the same keys.
    """

    def __init__(self, meta_keys: tuple[str, ...] = ("img_path", "seg_map_path", "ori_shape", "img_shape",
                                                     "pad_shape", "scale_factor", "flip", "flip_direction",
                                                     "reduce_zero_label")) -> None:
        self.meta_keys = tuple(meta_keys)

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        sample = SegDataSample()
        if results.get("gt_seg_map") is not None:
            seg = results["gt_seg_map"]
            seg = seg[None] if seg.ndim == 2 else seg
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(seg.astype(np.int64)))
        set_packed_metainfo(sample, results, self.meta_keys, img.shape[:2])
        return {"inputs": image_to_tensor(img), "data_samples": sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(meta_keys={self.meta_keys})"
