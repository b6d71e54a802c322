"""A small generated segmentation dataset in the ADE20K layout, for demos, smoke tests and CI.

``make_demo_dataset(root)`` writes ``images/{training,validation}/*.jpg`` and
``annotations/{training,validation}/*.png`` of textured scenes. Each scene is a background texture with
3-6 overlapping objects of five classes; every class has its own colour and texture statistics, with
per-object jitter, sensor noise and JPEG compression, so that a small network learns it in minutes
while the task is not pixel-colour lookup:

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
import shutil
import tempfile
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ...registry import DATASETS
from .base import SegDataset

DEMO_CLASSES = ("background", "disc", "rectangle", "triangle", "stripes", "checker")
DEMO_PALETTE = [[120, 120, 120], [230, 60, 30], [40, 80, 230], [40, 190, 60], [230, 210, 40], [40, 220, 220]]
MARKER = "densekit_demo.json"
_FORMAT_VERSION = 1
_SPLITS = (("training", 0), ("validation", 1))


def _hsv_to_bgr(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """OpenCV HSV (H in [0, 180)) float arrays -> float32 BGR ``(H, W, 3)``."""
    hsv = np.stack([np.mod(h, 180), np.clip(s, 0, 255), np.clip(v, 0, 255)], axis=-1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int, lo: float, hi: float) -> np.ndarray:
    """A random ``grid x grid`` field in [lo, hi] upsampled bicubically to ``shape``."""
    coarse = rng.uniform(lo, hi, size=(grid, grid)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    h = _smooth_field(rng, shape, 3, 0, 180)
    s = _smooth_field(rng, shape, 4, 5, 70)
    v = _smooth_field(rng, shape, 5, 70, 200)
    return _hsv_to_bgr(h, s, v)


def _texture(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float],
             size: float) -> np.ndarray:
    """Full-canvas BGR texture of class ``cls`` (1..5), parameterised around the object's centre."""
    cy, cx = centre
    ones = np.ones_like(yy)
    if cls == 1:  # disc: red/orange, bright centre
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / size
        return _hsv_to_bgr(rng.uniform(0, 14) * ones, rng.uniform(150, 235) * ones, 245 - 90 * np.clip(r, 0, 1))
    if cls == 2:  # rectangle: blue, linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        ramp = ((yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)) / size
        return _hsv_to_bgr(rng.uniform(102, 122) * ones, rng.uniform(130, 230) * ones, 165 + 55 * np.clip(ramp, -1, 1))
    if cls == 3:  # triangle: green with dark speckles
        v = rng.uniform(150, 230) * ones * np.where(rng.random(yy.shape) < 0.12, 0.45, 1.0)
        return _hsv_to_bgr(rng.uniform(48, 72) * ones, rng.uniform(130, 230) * ones, v)
    if cls == 4:  # stripes: yellow / purple bands
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
        band = (((yy * np.sin(angle) + xx * np.cos(angle)) / period) % 1.0) < 0.5
        return _hsv_to_bgr(np.where(band, 27, 140), 200 * ones, np.where(band, 230, 110))
    # checker: cyan / white cells
    cell = rng.uniform(5, 10)
    on = ((np.floor(yy / cell) + np.floor(xx / cell)) % 2).astype(bool)
    return _hsv_to_bgr(88 * ones, np.where(on, 210, 25), np.where(on, 200, 235))


def _shape_mask(cls: int, rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float],
                size: float) -> np.ndarray:
    """uint8 ``(H, W)`` mask (1 inside) of the object's outline."""
    mask = np.zeros(shape, np.uint8)
    cy, cx = centre
    if cls == 1:
        cv2.circle(mask, (round(cx), round(cy)), round(size), 1, -1)
    elif cls == 2:
        box = ((cx, cy), (size * rng.uniform(1.2, 2.0), size * rng.uniform(0.8, 1.4)), rng.uniform(0, 180))
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(box)).astype(np.int32)], 1)
    elif cls == 3:
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([cx + 1.2 * size * np.cos(angles), cy + 1.2 * size * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    elif cls == 4:
        axes = (round(size * rng.uniform(0.9, 1.4)), round(size * rng.uniform(0.5, 0.9)))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 8)))
        radii = size * rng.uniform(0.8, 1.2, len(angles))
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [cv2.convexHull(np.round(pts).astype(np.int32))], 1)
    return mask


def paint_scene(seed: int, split: int, index: int, size: tuple[int, int] = (256, 256)
                ) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """The drawing both demo generators share: ``(image (H, W, 3) uint8 BGR, owner (H, W) int32, classes,
    full_areas)``. ``owner`` is the index of the object a pixel shows (-1: background; later objects paint over
    earlier ones), ``classes[k]`` object k's class 1..5 and ``full_areas[k]`` its area before occlusion."""
    rng = np.random.default_rng([seed, split, index])
    shape = (int(size[0]), int(size[1]))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    image = _background(rng, shape)
    owner = np.full(shape, -1, np.int32)
    scale = min(shape) / 256
    num_objects = int(rng.integers(3, 7))
    first = int(rng.integers(5))  # consecutive classes, so every scene shows several
    classes, full_areas = [], []
    for k in range(num_objects):
        cls = 1 + (first + k) % 5 if k < 5 else int(rng.integers(1, 6))
        obj_size = rng.uniform(18, 48) * scale
        centre = (rng.uniform(0.1, 0.9) * shape[0], rng.uniform(0.1, 0.9) * shape[1])
        inside = _shape_mask(cls, rng, shape, centre, obj_size).astype(bool)
        image[inside] = _texture(cls, rng, yy, xx, centre, obj_size)[inside]
        owner[inside] = k
        classes.append(cls)
        full_areas.append(int(inside.sum()))
    image += rng.normal(0, rng.uniform(6, 14), size=image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), owner, classes, full_areas


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


def _is_complete(root: str, params: dict, marker: str = MARKER) -> bool:
    try:
        with open(osp.join(root, marker), encoding="utf-8") as f:
            return json.load(f) == params
    except (OSError, ValueError):
        return False


def generate_once(root: str, params: dict, marker: str, what: str, write: Callable[[str], None]) -> str:
    """Generate a dataset into ``root`` unless it is there with the same ``params``; return ``root`` (absolute).

    ``write(tmp)`` fills a temporary sibling folder and must write ``marker`` (``params`` as JSON) last; the
    folder then replaces ``root`` by a rename, so a crash never leaves a half-written dataset. A ``root``
    generated with other parameters is replaced; an existing, non-empty ``root`` without the marker is never
    touched (``FileExistsError`` naming ``what`` it is not). Concurrent callers (several ranks) are safe: each
    writes its own temporary folder and the first rename wins.
    """
    root = osp.abspath(os.fspath(root))
    if _is_complete(root, params, marker):
        return root
    if osp.exists(root) and not osp.exists(osp.join(root, marker)) and (not osp.isdir(root) or os.listdir(root)):
        raise FileExistsError(f"{root} exists and is not a {what} (no {marker}); choose another folder or remove it")
    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{osp.basename(root)}.tmp-", dir=parent)
    old = None
    try:
        write(tmp)
        if osp.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        elif osp.exists(root) and not _is_complete(root, params, marker):  # ours, other parameters: replace
            old = tempfile.mkdtemp(prefix=f".{osp.basename(root)}.old-", dir=parent)
            os.replace(root, osp.join(old, "data"))
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_complete(root, params, marker):  # someone else's rename did not produce what we need
                raise
    finally:
        for path in (tmp, old):
            if path is not None and osp.exists(path):
                shutil.rmtree(path, ignore_errors=True)
    return root


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
