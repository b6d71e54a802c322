"""Pictures people look at: colour overlays of label maps, written atomically."""
from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np


def default_palette(num_classes: int, seed: int = 42) -> list[list[int]]:
    """Deterministic RGB colours for classes without a palette."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, 255, size=(num_classes, 3)).tolist()


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` BGR colours (ignored pixels black)."""
    lut = np.zeros((256, 3), np.uint8)
    colors = np.asarray(palette, np.uint8)[:, ::-1]  # palettes are RGB, OpenCV writes BGR
    lut[: len(colors)] = colors[:256]
    lut[ignore_index] = 0
    return lut[label.astype(np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``label`` ``(H, W)`` over a BGR ``image`` ``(H, W, 3)``."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    return cv2.addWeighted(image, 1 - alpha, colorize(label, palette), alpha, 0)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """``cv2.imwrite`` through a temporary file and a rename, so a crash never leaves half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}{path.suffix}")
    try:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write image {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
