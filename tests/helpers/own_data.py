"""Data folders in mmsegmentation's custom layout for the ``densekit train --data`` tests: a tiny random one
(``make_folder``) and one built from the real Potsdam and Vaihingen crops in ../shared/data (``build_folder``:
6 classes, .png images)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .paths import SHARED_DATA

SHARED_SEG = SHARED_DATA / "seg"
CLASSES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")


def make_folder(root: Path, suffix: str = ".png", classes=("road", "building", "tree"), size: int = 32,
                per_split: int = 2) -> Path:
    """A tiny folder of random images and masks (values 0..len(classes)-1) and ``classes.txt``."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(per_split):
            cv2.imwrite(str(root / "images" / split / f"{i}{suffix}"), rng.integers(0, 255, (size, size, 3), np.uint8))
            cv2.imwrite(str(root / "masks" / split / f"{i}.png"), rng.integers(0, len(classes), (size, size), np.uint8))
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def have_shared_seg() -> bool:
    return (SHARED_SEG / "potsdam" / "images").is_dir() and (SHARED_SEG / "vaihingen" / "images").is_dir()


def _tiles(area: str, size: int):
    """``(name, image, mask)`` of every ``size`` x ``size`` tile of the area's crops."""
    for image_path in sorted((SHARED_SEG / area / "images").glob("*.png")):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(SHARED_SEG / area / "masks" / image_path.name), cv2.IMREAD_UNCHANGED)
        for y in range(0, image.shape[0] - size + 1, size):
            for x in range(0, image.shape[1] - size + 1, size):
                yield f"{area}_{image_path.stem}_{y}_{x}", image[y:y + size, x:x + size], mask[y:y + size, x:x + size]


def build_folder(root: Path, size: int = 128, classes: tuple[str, ...] = CLASSES) -> Path:
    """``root/images/{train,val}/*.png``, ``root/masks/{train,val}/*.png`` and ``root/classes.txt``: the Potsdam
    tiles and the first half of the Vaihingen tiles train, the rest of Vaihingen validates."""
    vaihingen = list(_tiles("vaihingen", size))
    splits = {"train": list(_tiles("potsdam", size)) + vaihingen[:len(vaihingen) // 2],
              "val": vaihingen[len(vaihingen) // 2:]}
    for split, tiles in splits.items():
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for name, image, mask in tiles:
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), image)
            cv2.imwrite(str(root / "masks" / split / f"{name}.png"), mask)
    (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    return root
