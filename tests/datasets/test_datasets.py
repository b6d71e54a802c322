"""Folder datasets: pairing, metainfo, clear errors, and real samples through a training pipeline."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.paths import SHARED_DATA

from densekit.datasets import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataset, SegDataset, default_palette
from densekit.registry import DATASETS
from densekit.structures import SegDataSample

ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")


def _write_pair(root: Path, name: str, value: int, img_dir: str = "img", ann_dir: str = "ann",
                img_suffix: str = ".jpg", mask: bool = True) -> None:
    (root / img_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (root / ann_dir / name).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / img_dir / f"{name}{img_suffix}"), np.full((16, 20, 3), 10 * value, np.uint8))
    if mask:
        cv2.imwrite(str(root / ann_dir / f"{name}.png"), np.full((16, 20), value, np.uint8))


def test_pairs_images_and_masks_by_name_sorted(tmp_path):
    for name, value in [("b", 2), ("a", 1), ("sub/c", 3)]:
        _write_pair(tmp_path, name, value)
    (tmp_path / "ann" / "orphan_mask.png").write_bytes(b"")  # masks without images are not items
    ds = SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x", "y", "z", "w"],
                    pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                              dict(type="PackSegInputs")])
    assert len(ds) == 3
    infos = [ds.get_data_info(i) for i in range(3)]
    assert [Path(i["img_path"]).relative_to(tmp_path / "img").as_posix() for i in infos] == \
        ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert [Path(i["seg_map_path"]).relative_to(tmp_path / "ann").as_posix() for i in infos] == \
        ["a.png", "b.png", "sub/c.png"]
    item = ds[1]
    assert isinstance(item["data_samples"], SegDataSample)
    assert item["inputs"].shape == (3, 16, 20) and item["inputs"].dtype == torch.uint8
    assert (item["data_samples"].gt_sem_seg.data == 2).all()
    meta = ds.metainfo
    assert meta["classes"] == ("x", "y", "z", "w")
    assert meta["palette"] == default_palette(4) == np.random.RandomState(42).randint(0, 255, (4, 3)).tolist()


def test_registered_under_both_names_and_builds_pipeline_without_scope(tmp_path):
    _write_pair(tmp_path, "a", 1)
    cfg = dict(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x", "y"],
               palette=[[1, 2, 3], [4, 5, 6]], pipeline=[dict(type="LoadImageFromFile")])
    for name in ("SegDataset", "BaseSegDataset"):
        ds = DATASETS.build(dict(type=name, **cfg))
        assert ds.metainfo["palette"] == [[1, 2, 3], [4, 5, 6]]
        assert ds[0]["img"].shape == (16, 20, 3)


def test_mmseg_style_arguments(tmp_path):
    _write_pair(tmp_path, "a", 1)
    ds = SegDataset(data_root=str(tmp_path), data_prefix=dict(img_path="img", seg_map_path="ann"),
                    metainfo=dict(classes=("x", "y")))
    assert ds.metainfo["classes"] == ("x", "y") and len(ds) == 1


def test_missing_folder_error_names_path_and_layout(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    with pytest.raises(FileNotFoundError) as err:
        ADE20KDataset(data_root=str(root))
    msg = str(err.value)
    assert "\n" not in msg  # one paragraph
    assert str(root / "images" / "training") in msg
    assert "images/training/*.jpg" in msg and "annotations/training/*.png" in msg
    assert "ADEChallengeData2016.zip" in msg
    (root / "images" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Annotation folder .*annotations/training"):
        ADE20KDataset(data_root=str(root))


def test_image_without_mask_is_named(tmp_path):
    _write_pair(tmp_path, "good", 1)
    _write_pair(tmp_path, "lonely", 1, mask=False)
    with pytest.raises(FileNotFoundError, match=r"lonely\.jpg has no mask.*lonely\.png"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x"])


def test_empty_dataset_says_so(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    _write_pair(tmp_path, "wrong_suffix", 1, img_suffix=".png")
    with pytest.raises(FileNotFoundError, match=r"empty: no image found for .*img/\*\.jpg"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x"])


def test_split_file_selects_in_order_and_names_missing_entries(tmp_path):
    for name in ("a", "b", "c"):
        _write_pair(tmp_path, name, 1)
    (tmp_path / "val.txt").write_text("c\na\n\n")
    ds = SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x"], split="val.txt")
    assert [Path(ds.get_data_info(i)["img_path"]).name for i in range(len(ds))] == ["c.jpg", "a.jpg"]
    (tmp_path / "bad.txt").write_text("a\nghost\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.txt lists 'ghost'.*ghost\.jpg"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x"], split="bad.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x"], split="nope.txt")


def test_classes_are_required_and_palette_checked(tmp_path):
    _write_pair(tmp_path, "a", 1)
    with pytest.raises(ValueError, match="class names"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann")
    with pytest.raises(ValueError, match="palette"):
        SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir="ann", classes=["x", "y"], palette=[[0, 0, 0]])


def test_unlabelled_dataset(tmp_path):
    _write_pair(tmp_path, "a", 1, mask=False)
    ds = SegDataset(data_root=str(tmp_path), img_dir="img", ann_dir=None, classes=["x"],
                    pipeline=[dict(type="LoadImageFromFile"), dict(type="PackSegInputs")])
    assert "seg_map_path" not in ds.get_data_info(0)
    assert "gt_sem_seg" not in ds[0]["data_samples"]


def test_ade20k_metainfo_and_reduce_zero_label(tmp_path):
    assert len(ADE20K_CLASSES) == len(ADE20K_PALETTE) == 150
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky") and ADE20K_CLASSES[-1] == "flag"
    assert ADE20K_PALETTE[0] == [120, 120, 120] and ADE20K_PALETTE[-1] == [92, 0, 255]
    _write_pair(tmp_path, "ADE_val_00000001", 0, img_dir="images/validation", ann_dir="annotations/validation")
    mask = np.zeros((16, 20), np.uint8)
    mask[:, 10:] = 150
    cv2.imwrite(str(tmp_path / "annotations/validation/ADE_val_00000001.png"), mask)
    ds = DATASETS.build(dict(type="ADE20KDataset", data_root=str(tmp_path), img_dir="images/validation",
                             ann_dir="annotations/validation",
                             pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                       dict(type="PackSegInputs")]))
    assert ds.metainfo["reduce_zero_label"] is True and len(ds.metainfo["classes"]) == 150
    gt = ds[0]["data_samples"].gt_sem_seg.data
    assert (gt[..., :10] == 255).all() and (gt[..., 10:] == 149).all()


@pytest.mark.parametrize("name", ["potsdam", "vaihingen"])
def test_real_aerial_samples_through_training_pipeline(name):
    root = SHARED_DATA / "seg" / name
    if not root.is_dir():
        pytest.skip(f"real samples not available at {root}")
    np.random.seed(0)
    ds = SegDataset(data_root=str(root), img_dir="images", ann_dir="masks", img_suffix=".png",
                    classes=ISPRS_CLASSES,
                    pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                              dict(type="RandomResize", scale=(512, 256), ratio_range=(0.5, 2.0)),
                              dict(type="RandomCrop", crop_size=(256, 256), cat_max_ratio=0.75),
                              dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"),
                              dict(type="Pad", size=(256, 256)), dict(type="PackSegInputs")])
    assert len(ds) >= 1
    item = ds[0]
    assert item["inputs"].shape == (3, 256, 256) and item["inputs"].dtype == torch.uint8
    gt = item["data_samples"].gt_sem_seg.data
    assert gt.shape == (1, 256, 256) and gt.dtype == torch.int64
    values = set(gt.unique().tolist())
    assert values <= {0, 1, 2, 3, 4, 5, 255} and len(values - {255}) >= 2
    assert item["data_samples"].metainfo["ori_shape"] == (512, 512)
