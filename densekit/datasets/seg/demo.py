"""A small generated segmentation dataset in the ADE20K layout, for demos, smoke tests and CI.

``make_demo_dataset(root)`` writes ``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png`` of textured scenes (``densekit.datasets.scenes``). Each scene is a
background texture with 3-6 overlapping objects of five classes; every class has its own colour and texture
statistics, with per-object jitter, sensor noise and JPEG compression, so that a small network learns it in
minutes while the task is not pixel-colour lookup:

=============  ==============================================================================
class          appearance
=============  ==============================================================================
background     low-saturation colour field varying smoothly over the image (any hue)
disc           red/orange disc with radial shading
rectangle      blue rotated rectangle with a linear gradient
triangle       green triangle speckled with dark dots
stripes        ellipse filled with yellow/purple stripes at a random angle and period
checker        convex polygon filled with a cyan/white checkerboard
=============  ==============================================================================

Masks follow the ADE20K convention: 1..6 are the classes above and 0 ("unlabelled") marks a 2-pixel
band along every boundary, where JPEG blurs the edge; ``DemoDataset`` (``reduce_zero_label=True``)
trains on 0..5 and ignores the band (255). Generation is deterministic (scene ``i`` of a split depends
only on ``(seed, split, i)``), atomic (written to a temporary folder, then renamed) and skipped when
``root`` already holds a complete dataset with the same parameters (``densekit_demo.json``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ...registry import DATASETS
from ..scenes import DEMO_CLASSES, generate_once, paint_scene
from .base import SegDataset

DEMO_PALETTE = [[120, 120, 120], [230, 60, 30], [40, 80, 230], [40, 190, 60], [230, 210, 40], [40, 220, 220]]
MARKER = "densekit_demo.json"
_FORMAT_VERSION = 1
_SPLITS = (("training", 0), ("validation", 1))


def make_demo_scene(seed: int, split: int, index: int, size: tuple[int, int] = (256, 256)) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Scene ``index`` of ``split``: ``(image (H, W, 3) uint8 BGR, mask (H, W) uint8)``, mask values
    0 (boundary, unlabelled) and 1..6 (``DEMO_CLASSES``)."""
    image, owner, classes, _ = paint_scene(seed, split, index, size)
    label = np.concatenate([[0], classes]).astype(np.uint8)[owner + 1]  # object class 1..5, 0 = background
    mask = label + 1  # ADE convention: classes 1..6
    edge = np.zeros(label.shape, bool)  # both sides of every boundary -> 0
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge[:-1, :] |= label[1:, :] != label[:-1, :]
    mask[edge] = 0
    return image, mask


def _params(num_train: int, num_val: int, size: tuple[int, int], seed: int) -> dict:
    return dict(version=_FORMAT_VERSION, num_train=int(num_train), num_val=int(num_val),
                size=[int(size[0]), int(size[1])], seed=int(seed), classes=list(DEMO_CLASSES))


def _write_all(tmp: str, params: dict, progress: bool) -> None:
    counts = {"training": params["num_train"], "validation": params["num_val"]}
    with tqdm(total=sum(counts.values()), desc="densekit demo dataset", unit="img", disable=not progress) as bar:
        for split, split_id in _SPLITS:
            img_dir, ann_dir = osp.join(tmp, "images", split), osp.join(tmp, "annotations", split)
            os.makedirs(img_dir)
            os.makedirs(ann_dir)
            for i in range(counts[split]):
                image, mask = make_demo_scene(params["seed"], split_id, i, tuple(params["size"]))
                name = f"demo_{split}_{i:04d}"
                ok_img, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                ok_ann, png = cv2.imencode(".png", mask)
                if not (ok_img and ok_ann):
                    raise RuntimeError(f"OpenCV failed to encode {name}")
                jpg.tofile(osp.join(img_dir, name + ".jpg"))
                png.tofile(osp.join(ann_dir, name + ".png"))
                bar.update(1)
    with open(osp.join(tmp, MARKER), "w", encoding="utf-8") as f:  # written last: marks completeness
        json.dump(params, f, indent=1)


def make_demo_dataset(root: str, num_train: int = 96, num_val: int = 24, size: tuple[int, int] = (256, 256),
                      seed: int = 0, progress: bool = True) -> str:
    """Generate the demo dataset in ``root`` (ADE20K layout) unless it is already there; return ``root``.

    ``size`` is ``(H, W)``. A ``root`` generated with other parameters is replaced; an existing,
    non-empty ``root`` without the marker is never touched (FileExistsError). Concurrent callers (e.g.
    several ranks) are safe: each writes its own temporary folder and the first rename wins.
    """
    params = _params(num_train, num_val, size, seed)
    return generate_once(root, params, MARKER, "densekit demo dataset", lambda tmp: _write_all(tmp, params, progress))


@DATASETS.register_module()
class DemoDataset(SegDataset):
    """The generated demo dataset (``make_demo_dataset``): 6 classes ``DEMO_CLASSES``, ADE20K layout
    and convention (``reduce_zero_label=True``; boundary pixels ignored).

    With ``generate=True`` (default) a missing dataset is generated in ``data_root`` first, with the
    given ``num_train``, ``num_val``, ``size`` and ``seed``; train and val datasets of one config must
    use the same values.
    """

    METAINFO = dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)
    LAYOUT_HINT = "Generate it with densekit.datasets.make_demo_dataset(data_root), or pass generate=True."

    def __init__(self,
                 data_root: str = "data/densekit_demo",
                 img_dir: str = "images/training",
                 ann_dir: str | None = "annotations/training",
                 pipeline: Sequence[dict | Callable] = (),
                 generate: bool = True,
                 num_train: int = 96,
                 num_val: int = 24,
                 size: tuple[int, int] = (256, 256),
                 seed: int = 0,
                 data_prefix: dict | None = None,
                 test_mode: bool = False,
                 indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 on_bad_sample: str = "raise") -> None:
        if generate:
            make_demo_dataset(data_root, num_train=num_train, num_val=num_val, size=size, seed=seed)
        super().__init__(data_root=data_root, img_dir=img_dir, ann_dir=ann_dir, img_suffix=".jpg",
                         seg_map_suffix=".png", reduce_zero_label=True, pipeline=pipeline,
                         data_prefix=data_prefix, test_mode=test_mode, indices=indices,
                         serialize_data=serialize_data, lazy_init=lazy_init, max_refetch=max_refetch,
                         on_bad_sample=on_bad_sample)
