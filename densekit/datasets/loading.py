"""What the segmentation, detection and medical datasets share: building a pipeline, reading an image file,
sizes that keep the aspect ratio, and packing arrays into a model's ``inputs`` and data-sample metainfo.

``seg/``, ``det/`` and ``medical/`` import from here, never from each other. Result dicts are mmcv-style
(``img`` ``(H, W, 3)`` uint8 BGR as ``cv2.imread`` returns it, ``img_shape`` / ``ori_shape`` ``(H, W)``,
``scale_factor`` ``(w_scale, h_scale)``, ``flip``, ``flip_direction``); ``LoadImageFromFile`` is registered in
``TRANSFORMS`` under mmcv's name.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from ..registry import TRANSFORMS
from .bad_samples import BadSampleError, UnreadableFileError


def build_pipeline(pipeline: Sequence[dict | Callable]) -> list[Callable]:
    """Build transform configs with densekit's registry, so ``type='RandomCrop'`` resolves to densekit's
    transform without a ``default_scope``; mmengine's own transforms are still found (parent registry)."""
    return [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]


def rescale_size(h: int, w: int, scale: tuple[int, int] | int | float) -> tuple[tuple[int, int], float]:
    """mmcv ``rescale_size``: the largest size that fits ``scale`` while keeping the aspect ratio.

    For a pair, ``factor = min(max(scale) / max(h, w), min(scale) / min(h, w))`` (the orientation of
    ``scale`` does not matter); a number is the factor itself. Returns ``((new_w, new_h), factor)``; a side
    never rounds to 0 (mmcv would: a 1x9 strip at scale (4, 1) became 4x0, which OpenCV rejects).
    """
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return (max(int(w * factor + 0.5), 1), max(int(h * factor + 0.5), 1)), factor


# A JPEG ends with the EOI marker; libjpeg decodes a truncated file without error (grey bottom rows).
_JPEG_END = b"\xff\xd9"


def read_image_file(path: str, what: str = "image") -> np.ndarray:
    """The decoded file as OpenCV stores it (``IMREAD_UNCHANGED``: any depth and channel count).

    Raises:
        FileNotFoundError: no such file.
        UnreadableFileError: not an image format OpenCV decodes, or truncated; names the file.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise UnreadableFileError(f"cannot read {what} {path}: empty, truncated or not an image format OpenCV "
                                  "decodes (expected PNG, JPEG, TIFF, BMP, WebP)")
    if data[:2].tobytes() == b"\xff\xd8" and _JPEG_END not in data[-64:].tobytes():
        raise UnreadableFileError(f"{what} {path} is a truncated JPEG (no end-of-image marker): the file was cut "
                                  "short (interrupted download or copy?)")
    return img


def to_bgr_uint8(img: np.ndarray, path: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR from what ``read_image_file`` returns.

    Grayscale is replicated to 3 channels and BGRA drops its alpha (both lossless for the colour).
    16-bit (or float) images are refused rather than scaled: their useful range is data-specific
    (depth, medical, raw sensor), and a silent ``>> 8`` (what ``cv2.IMREAD_COLOR`` does) turns most of
    them into a black image. Convert such files to 8 bits with the window your data needs.
    """
    if img.dtype != np.uint8:
        raise BadSampleError(f"image {path} has {img.dtype} pixels (values {img.min()}..{img.max()}); densekit "
                             "expects 8-bit images: convert it with the intensity window your data needs")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise BadSampleError(f"image {path} has shape {img.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")


@TRANSFORMS.register_module()
class LoadImageFromFile:
    """Read ``results['img_path']`` as a BGR uint8 ``(H, W, 3)`` image (mmcv's ``LoadImageFromFile`` with
    ``color_type='color'``); sets ``img_shape`` and ``ori_shape``.

    Grayscale images become 3 identical channels and RGBA images lose their alpha; 16-bit images,
    truncated or undecodable files raise ``BadSampleError`` naming the file (see ``to_bgr_uint8``).
    """

    def __init__(self, to_float32: bool = False) -> None:
        self.to_float32 = to_float32

    def __call__(self, results: dict) -> dict:
        path = results["img_path"]
        img = to_bgr_uint8(read_image_file(path), path)
        if self.to_float32:
            img = img.astype(np.float32)
        results["img"] = img
        results["img_shape"] = img.shape[:2]
        results["ori_shape"] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(to_float32={self.to_float32})"


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W[, C])`` array -> ``(C, H, W)`` tensor (a copy only where the transpose needs one)."""
    img = img[..., None] if img.ndim < 3 else img
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def set_packed_metainfo(sample, results: dict, meta_keys: Sequence[str], image_shape: tuple[int, ...]) -> None:
    """Give ``sample`` the ``meta_keys`` present in ``results``, after the defaults every packer sets when no
    transform did (``pad_shape`` = ``img_shape``, else ``image_shape``; ``scale_factor`` ``(1.0, 1.0)``; ``flip``
    False; ``flip_direction`` None), so every sample of a batch carries the same keys."""
    results.setdefault("pad_shape", results.get("img_shape", image_shape))
    results.setdefault("scale_factor", (1.0, 1.0))
    results.setdefault("flip", False)
    results.setdefault("flip_direction", None)
    sample.set_metainfo({k: results[k] for k in meta_keys if k in results})
