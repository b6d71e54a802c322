"""The scenes both generated demo datasets show, and the write-once folder generation they share.

``paint_scene(seed, split, index)`` draws one scene: a background texture with 3-6 overlapping objects of five
classes (``DEMO_CLASSES[1:]``), each with its own colour and texture statistics, per-object jitter and sensor
noise. ``densekit.datasets.seg.demo`` turns the painting into an ADE20K-style mask, ``densekit.datasets.det.demo``
into COCO boxes, so scene ``i`` of a split is the same image in both. Generation is deterministic: a scene
depends only on ``(seed, split, index)``. ``generate_once`` writes a whole dataset folder atomically.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
import tempfile
from collections.abc import Callable

import cv2
import numpy as np

DEMO_CLASSES = ("background", "disc", "rectangle", "triangle", "stripes", "checker")


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


def _is_complete(root: str, params: dict, marker: str) -> bool:
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
        raise FileExistsError(f"{root} exists and is not a {what} (no {marker}); to train on a folder of your own "
                              "(images/{train,val}, masks/{train,val}, classes.txt) pass it as densekit train CONFIG "
                              "--data FOLDER, else choose another folder for the generated data")
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
