"""The generated demo dataset: ADE20K layout, deterministic bytes, atomic and skipped when complete."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from densekit.datasets import DEMO_CLASSES, DemoDataset, make_demo_dataset, make_demo_scene
from densekit.registry import DATASETS

SMALL = dict(num_train=6, num_val=2, size=(64, 96), seed=0, progress=False)


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_labels(tmp_path):
    root = Path(make_demo_dataset(str(tmp_path / "demo"), **SMALL))
    for split, n in [("training", 6), ("validation", 2)]:
        images = sorted((root / "images" / split).glob("*.jpg"))
        masks = sorted((root / "annotations" / split).glob("*.png"))
        assert len(images) == len(masks) == n
        assert [p.stem for p in images] == [p.stem for p in masks]
    img = cv2.imread(str(images[0]))
    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 96, 3) and mask.shape == (64, 96) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(len(DEMO_CLASSES) + 1))  # 0 = boundary, 1..6 = classes
    assert not list(tmp_path.glob(".demo.tmp-*"))  # the temporary folder is gone


def test_generation_is_deterministic(tmp_path):
    a = Path(make_demo_dataset(str(tmp_path / "a"), **SMALL))
    b = Path(make_demo_dataset(str(tmp_path / "b"), **SMALL))
    assert _digest(a) == _digest(b) and len(_digest(a)) == 6 + 2 + 6 + 2 + 1
    other = Path(make_demo_dataset(str(tmp_path / "c"), **(SMALL | dict(seed=1))))
    assert _digest(other) != _digest(a)
    img1, mask1 = make_demo_scene(0, 0, 3, (64, 64))
    img2, mask2 = make_demo_scene(0, 0, 3, (64, 64))
    assert np.array_equal(img1, img2) and np.array_equal(mask1, mask2)


def test_skips_complete_dataset_and_replaces_other_parameters(tmp_path):
    root = tmp_path / "demo"
    make_demo_dataset(str(root), **SMALL)
    first = root / "images" / "training" / "demo_training_0000.jpg"
    stamp = first.stat().st_mtime_ns
    make_demo_dataset(str(root), **SMALL)
    assert first.stat().st_mtime_ns == stamp  # not regenerated
    make_demo_dataset(str(root), **(SMALL | dict(num_train=3)))
    assert len(list((root / "images" / "training").glob("*.jpg"))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no leftovers


def test_refuses_foreign_folder_but_accepts_empty_one(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a densekit demo dataset"):
        make_demo_dataset(str(foreign), **SMALL)
    assert (foreign / "precious.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    make_demo_dataset(str(empty), **SMALL)
    assert (empty / "densekit_demo.json").is_file()


def test_demo_dataset_reduces_zero_label_and_shows_every_class(tmp_path):
    root = str(tmp_path / "demo")
    ds = DATASETS.build(dict(type="DemoDataset", data_root=root, num_train=6, num_val=2, size=(64, 96),
                             pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                       dict(type="PackSegInputs")]))
    assert ds.metainfo["classes"] == DEMO_CLASSES and len(DEMO_CLASSES) == 6
    seen = set()
    for i in range(len(ds)):
        seen |= set(ds[i]["data_samples"].gt_sem_seg.data.unique().tolist())
    assert seen == set(range(6)) | {255}
    val = DemoDataset(data_root=root, img_dir="images/validation", ann_dir="annotations/validation", generate=False)
    assert len(val) == 2
    with pytest.raises(FileNotFoundError, match="make_demo_dataset"):
        DemoDataset(data_root=str(tmp_path / "absent"), generate=False)
