"""A small generated detection dataset in COCO format, for demos, smoke tests and CI.

The scenes are the segmentation demo's (``densekit.datasets.scenes.paint_scene``: textured background,
3-6 overlapping discs, rectangles, triangles, striped ellipses and checkered polygons, noise, JPEG):
scene ``i`` of a split is the same image in both datasets. Each object's box is derived from its
*visible* mask (the pixels no later object covers): ``[x_min, y_min, x_max + 1, y_max + 1]`` in COCO's
``[x, y, w, h]``, ``area`` = visible pixels, category = its demo class (``DEMO_DET_CLASSES``). Objects
less than ``min_visible`` visible (or under 64 visible pixels) are marked ``iscrowd=1`` (ignored in
training and evaluation); fully hidden objects get no annotation.

``make_demo_det_dataset(root)`` writes::

    root/images/{train,val}/demo_det_{split}_{i:04d}.jpg
    root/annotations/instances_{train,val}.json
    root/densekit_demo_det.json          (parameters; written last, marks a complete dataset)

deterministically (scene ``i`` depends only on ``(seed, split, i)``) and atomically (a temporary folder
renamed into place), and does nothing when ``root`` already holds a dataset with the same parameters.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ...registry import DATASETS
from ..scenes import DEMO_CLASSES, generate_once, paint_scene
from .coco import CocoDataset

DEMO_DET_CLASSES = DEMO_CLASSES[1:]  # disc, rectangle, triangle, stripes, checker (category ids 1..5)
MARKER = "densekit_demo_det.json"
_FORMAT_VERSION = 1
_SPLITS = (("train", 0), ("val", 1))  # the segmentation demo's split ids: training 0, validation 1


def make_demo_det_scene(seed: int, split: int, index: int, size: tuple[int, int] = (256, 256),
                        min_visible: float = 0.3) -> tuple[np.ndarray, list[dict]]:
    """Scene ``index`` of ``split``: ``(image (H, W, 3) uint8 BGR, objects)``; each object is
    ``dict(bbox=[x, y, w, h], area, category_id, iscrowd)``. The image equals ``make_demo_scene``'s: both are
    ``paint_scene``'s."""
    image, owner, classes, full_areas = paint_scene(seed, split, index, size)
    objects = []
    for k, (cls, full) in enumerate(zip(classes, full_areas)):
        ys, xs = np.nonzero(owner == k)
        if len(xs) == 0:
            continue
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        crowd = len(xs) < max(64, min_visible * full)
        objects.append(dict(bbox=[x1, y1, x2 - x1, y2 - y1], area=int(len(xs)), category_id=cls,
                            iscrowd=int(crowd)))
    return image, objects


def _params(num_train: int, num_val: int, size: tuple[int, int], seed: int, min_visible: float) -> dict:
    return dict(version=_FORMAT_VERSION, num_train=int(num_train), num_val=int(num_val),
                size=[int(size[0]), int(size[1])], seed=int(seed), min_visible=float(min_visible),
                classes=list(DEMO_DET_CLASSES))


def _write_split(tmp: str, split: str, split_id: int, count: int, params: dict) -> None:
    img_dir = osp.join(tmp, "images", split)
    os.makedirs(img_dir)
    images, annotations = [], []
    for i in range(count):
        image, objects = make_demo_det_scene(params["seed"], split_id, i, tuple(params["size"]),
                                             params["min_visible"])
        name = f"demo_det_{split}_{i:04d}.jpg"
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode {name}")
        jpg.tofile(osp.join(img_dir, name))
        images.append(dict(id=i + 1, file_name=name, height=image.shape[0], width=image.shape[1]))
        for obj in objects:  # COCO ids start at 1 (COCOeval treats id 0 as "unmatched")
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, **obj))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(DEMO_DET_CLASSES)]
    with open(osp.join(tmp, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def make_demo_det_dataset(root: str, num_train: int = 200, num_val: int = 50, size: tuple[int, int] = (256, 256),
                          seed: int = 0, min_visible: float = 0.3) -> str:
    """Generate the demo detection dataset in ``root`` unless it is already there; return ``root``.

    ``size`` is ``(H, W)``. A ``root`` generated with other parameters is replaced; an existing, non-empty
    ``root`` without the marker is never touched (``FileExistsError``). Concurrent callers are safe: each
    writes its own temporary folder and the first rename wins.
    """
    params = _params(num_train, num_val, size, seed, min_visible)

    def write(tmp: str) -> None:
        os.makedirs(osp.join(tmp, "annotations"))
        for (split, split_id), count in zip(_SPLITS, (num_train, num_val)):
            _write_split(tmp, split, split_id, count, params)
        with open(osp.join(tmp, MARKER), "w", encoding="utf-8") as f:  # last: marks completeness
            json.dump(params, f, indent=1)

    return generate_once(root, params, MARKER, "densekit demo detection dataset", write)


@DATASETS.register_module()
class DemoDetDataset(CocoDataset):
    """The generated demo detection dataset (``make_demo_det_dataset``), split ``'train'`` or ``'val'``.

    With ``generate=True`` (default) a missing dataset is generated in ``data_root`` first with the given
    ``num_train``, ``num_val``, ``size`` and ``seed``; train and val datasets of one config must agree.
    """

    METAINFO = dict(classes=DEMO_DET_CLASSES)

    def __init__(self, data_root: str = "data/densekit_demo_det", split: str = "train",
                 pipeline: Sequence[dict | Callable] = (), generate: bool = True, num_train: int = 200,
                 num_val: int = 50, size: tuple[int, int] = (256, 256), seed: int = 0, filter_empty_gt: bool = True,
                 test_mode: bool = False, indices: int | Sequence[int] | None = None, serialize_data: bool = True,
                 lazy_init: bool = False, max_refetch: int = 1000) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if generate:
            make_demo_det_dataset(data_root, num_train=num_train, num_val=num_val, size=size, seed=seed)
        super().__init__(data_root=data_root, ann_file=f"annotations/instances_{split}.json",
                         data_prefix=dict(img=f"images/{split}/"), filter_empty_gt=filter_empty_gt,
                         pipeline=pipeline, test_mode=test_mode, indices=indices, serialize_data=serialize_data,
                         lazy_init=lazy_init, max_refetch=max_refetch)
