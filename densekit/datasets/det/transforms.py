"""Detection data transforms (OpenCV + numpy) with mmdetection 3.x semantics, registered in ``TRANSFORMS``.

They work on mmcv-style result dicts as the segmentation transforms do (``img`` ``(H, W, 3)`` uint8 BGR,
``img_shape``, ``ori_shape``, ``scale_factor`` ``(w, h)``, ``flip``, ...) plus mmdet's box keys:

- ``gt_bboxes``: ``(N, 4)`` float32 ``(x1, y1, x2, y2)`` in pixels of the current image;
- ``gt_bboxes_labels``: ``(N,)`` int64; ``gt_ignore_flags``: ``(N,)`` bool (crowd / difficult boxes);
- ``gt_areas``: ``(N,)`` float32 object areas (COCO's annotation area, else the box area), used by the
  proposal recall metric's size ranges.

mmdet's RPN pipelines, with densekit names::

    train: LoadImageFromFile, LoadDetAnnotations, DetResize(scale=(1333, 800), keep_ratio=True),
           DetRandomFlip(prob=0.5), PackDetInputs
    test:  LoadImageFromFile, DetResize(scale=(1333, 800), keep_ratio=True), LoadDetAnnotations, PackDetInputs

(annotations loaded after the resize stay in original image coordinates, where recall is measured;
``DetDataPreProcessor`` pads batches to a multiple of 32, ``DetPad`` does it per image when wanted).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from mmengine.structures import InstanceData

from ...registry import TRANSFORMS
from ...structures import DetDataSample
from ..loading import LoadImageFromFile, image_to_tensor, rescale_size, set_packed_metainfo

__all__ = ["DetPad", "DetRandomFlip", "DetResize", "LoadDetAnnotations", "LoadImageFromFile", "PackDetInputs"]


@TRANSFORMS.register_module()
class LoadDetAnnotations:
    """``results['instances']`` (list of ``dict(bbox=[x1, y1, x2, y2], bbox_label=int, ignore_flag=0|1,
    area=float)``, as the detection datasets write them) -> ``gt_bboxes``, ``gt_bboxes_labels``,
    ``gt_ignore_flags`` and ``gt_areas`` (mmdet's ``LoadAnnotations(with_bbox=True)``)."""

    def __call__(self, results: dict) -> dict:
        instances = results.get("instances", [])
        boxes = np.array([inst["bbox"] for inst in instances], np.float32).reshape(-1, 4)
        results["gt_bboxes"] = boxes
        results["gt_bboxes_labels"] = np.array([inst["bbox_label"] for inst in instances], np.int64)
        results["gt_ignore_flags"] = np.array([bool(inst.get("ignore_flag", 0)) for inst in instances], bool)
        box_areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        results["gt_areas"] = np.array([inst.get("area", a) for inst, a in zip(instances, box_areas)], np.float32)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@TRANSFORMS.register_module()
class DetResize:
    """mmdet ``Resize``: the image bilinearly (OpenCV), boxes scaled by ``scale_factor`` and clipped to the
    new image.

    ``scale`` is ``(w, h)`` (mmcv order). With ``keep_ratio`` the factor is ``min(max(scale) / max(h, w),
    min(scale) / min(h, w))`` (so ``(1333, 800)`` means "short side 800, long side at most 1333") and the
    new size ``int(w * f + 0.5), int(h * f + 0.5)``; otherwise the image is resized to exactly ``scale``.
    Sets ``img_shape``, ``scale_factor = (new_w / w, new_h / h)``, ``keep_ratio``; ``gt_areas`` scale by
    ``w_scale * h_scale``.
    """

    def __init__(self, scale: tuple[int, int] | int = (1333, 800), keep_ratio: bool = True,
                 clip_object_border: bool = True) -> None:
        self.scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        size = rescale_size(h, w, self.scale)[0] if self.keep_ratio else (int(self.scale[0]), int(self.scale[1]))
        results["img"] = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        sx, sy = size[0] / w, size[1] / h
        if results.get("gt_bboxes") is not None:
            boxes = results["gt_bboxes"] * np.array([sx, sy, sx, sy], np.float32)
            if self.clip_object_border:
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[0])
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[1])
            results["gt_bboxes"] = boxes.astype(np.float32)
        if results.get("gt_areas") is not None:
            results["gt_areas"] = (results["gt_areas"] * (sx * sy)).astype(np.float32)
        results["img_shape"] = results["img"].shape[:2]
        results["scale"] = self.scale
        results["scale_factor"] = (sx, sy)
        results["keep_ratio"] = self.keep_ratio
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, keep_ratio={self.keep_ratio})"


@TRANSFORMS.register_module()
class DetRandomFlip:
    """mmdet ``RandomFlip`` (horizontal): with probability ``prob`` flip the image and boxes,
    ``x1' = w - x2``, ``x2' = w - x1`` (``w`` the image width; no -1 pixel). Sets ``flip`` and
    ``flip_direction``. Randomness from ``np.random`` (seeded by mmengine)."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, results: dict) -> dict:
        flip = bool(np.random.random_sample() < self.prob)
        if flip:
            results["img"] = np.ascontiguousarray(results["img"][:, ::-1])
            w = results["img"].shape[1]
            if results.get("gt_bboxes") is not None:
                boxes = results["gt_bboxes"].copy()
                boxes[:, 0] = w - results["gt_bboxes"][:, 2]
                boxes[:, 2] = w - results["gt_bboxes"][:, 0]
                results["gt_bboxes"] = boxes
        results["flip"] = flip
        results["flip_direction"] = "horizontal" if flip else None
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"


@TRANSFORMS.register_module()
class DetPad:
    """mmdet ``Pad``: pad the image right and bottom with ``pad_val`` to a multiple of ``size_divisor``
    (or to ``size = (w, h)``); boxes are unchanged. Sets ``pad_shape``."""

    def __init__(self, size_divisor: int | None = 32, size: tuple[int, int] | None = None, pad_val: int = 0) -> None:
        if (size is None) == (size_divisor is None):
            raise ValueError("DetPad needs exactly one of size and size_divisor")
        self.size_divisor = size_divisor
        self.size = tuple(size) if size is not None else None
        self.pad_val = pad_val

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        h, w = img.shape[:2]
        if self.size is not None:
            th, tw = max(self.size[1], h), max(self.size[0], w)
        else:
            d = self.size_divisor
            th, tw = -(-h // d) * d, -(-w // d) * d
        padded = cv2.copyMakeBorder(img, 0, th - h, 0, tw - w, cv2.BORDER_CONSTANT, value=(self.pad_val,) * 4)
        results["img"] = padded[..., None] if img.ndim == 3 and padded.ndim == 2 else padded
        results["pad_shape"] = (th, tw)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size_divisor={self.size_divisor}, size={self.size}, pad_val={self.pad_val})"


@TRANSFORMS.register_module()
class PackDetInputs:
    """mmdet ``PackDetInputs``: ``{'inputs': uint8 (3, H, W) tensor, 'data_samples': DetDataSample}``.

    Boxes without the ignore flag go to ``gt_instances`` (``bboxes``, ``labels``, ``areas``), flagged ones
    to ``ignored_instances``. Metainfo: ``meta_keys`` found in ``results``, with ``pad_shape`` defaulting to
    ``img_shape``, ``scale_factor`` to ``(1.0, 1.0)`` and ``flip`` to False.
    """

    def __init__(self, meta_keys: tuple[str, ...] = ("img_id", "img_path", "ori_shape", "img_shape", "pad_shape",
                                                     "scale_factor", "flip", "flip_direction")) -> None:
        self.meta_keys = tuple(meta_keys)

    @staticmethod
    def _instances(results: dict, keep: np.ndarray) -> InstanceData:
        instances = InstanceData()
        instances.bboxes = torch.from_numpy(results["gt_bboxes"][keep].astype(np.float32)).reshape(-1, 4)
        instances.labels = torch.from_numpy(results["gt_bboxes_labels"][keep].astype(np.int64))
        if results.get("gt_areas") is not None:
            instances.areas = torch.from_numpy(results["gt_areas"][keep].astype(np.float32))
        return instances

    def __call__(self, results: dict) -> dict:
        img = results["img"]
        sample = DetDataSample()
        if results.get("gt_bboxes") is not None:
            ignore = results.get("gt_ignore_flags")
            ignore = np.zeros(len(results["gt_bboxes"]), bool) if ignore is None else ignore.astype(bool)
            sample.gt_instances = self._instances(results, ~ignore)
            sample.ignored_instances = self._instances(results, ignore)
        set_packed_metainfo(sample, results, self.meta_keys, img.shape[:2])
        return {"inputs": image_to_tensor(img), "data_samples": sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(meta_keys={self.meta_keys})"
