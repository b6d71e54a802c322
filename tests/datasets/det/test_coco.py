"""Detection data: COCO-format and VOC datasets, the generated demo, and the box transforms (mmdet semantics)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.paths import SHARED_DATA

from densekit.datasets import (
    CocoDataset,
    DatasetWarning,
    DemoDetDataset,
    VOCDataset,
    make_demo_det_dataset,
    make_demo_det_scene,
    make_demo_scene,
)
from densekit.datasets.det.transforms import DetPad, DetRandomFlip, DetResize, LoadDetAnnotations, PackDetInputs
from densekit.registry import DATASETS

pytest.importorskip("pycocotools")
SHARED = SHARED_DATA
VOC = SHARED / "det" / "voc"
PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadDetAnnotations"), dict(type="PackDetInputs")]


def _write_image(path: Path, h: int = 60, w: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _coco(root: Path) -> Path:
    """4 images: 1 with a good box, a zero-width box and a crowd box; 2 without annotations; 3 with a good box;
    4 with a good box and a missing file (``img/missing.jpg``)."""
    images = [dict(id=i, file_name=f"{name}.jpg", height=60, width=80)
              for i, name in ((1, "a"), (2, "empty"), (3, "b"), (4, "missing"))]
    anns = [
        dict(id=1, image_id=1, category_id=7, bbox=[10, 5, 30, 20], area=500.0, iscrowd=0),
        dict(id=2, image_id=1, category_id=7, bbox=[40, 5, 0, 20], area=0.0, iscrowd=0),     # zero width
        dict(id=3, image_id=1, category_id=9, bbox=[0, 30, 50, 25], area=1000.0, iscrowd=1),  # crowd
        dict(id=4, image_id=3, category_id=9, bbox=[70, 50, 20, 20], area=300.0, iscrowd=0),  # crosses the border
        dict(id=5, image_id=4, category_id=7, bbox=[1, 1, 10, 10], area=100.0, iscrowd=0),
    ]
    cats = [dict(id=7, name="cat"), dict(id=9, name="dog")]
    for name in ("a", "empty", "b"):
        _write_image(root / "img" / f"{name}.jpg")
    path = root / "ann.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return path


def test_coco_skips_with_counted_warnings_and_names_a_missing_file(tmp_path):
    ann = _coco(tmp_path)
    cfg = dict(type="CocoDataset", data_root=str(tmp_path), ann_file="ann.json", data_prefix=dict(img="img/"),
               pipeline=PIPELINE)
    with pytest.warns(DatasetWarning) as record, pytest.raises(FileNotFoundError) as error:
        DATASETS.build(cfg)
    assert str(tmp_path / "img" / "missing.jpg") in str(error.value) and str(ann) in str(error.value)
    messages = [str(w.message) for w in record]
    assert any("skipped 1 box(es)" in m and "annotation id 2" in m for m in messages), messages
    assert any("skipped 1 image(s)" in m and "empty.jpg" in m for m in messages), messages

    _write_image(tmp_path / "img" / "missing.jpg")
    with pytest.warns(DatasetWarning) as record:
        dataset = DATASETS.build(cfg)
    assert len(record) == 2 and len(dataset) == 3
    assert dataset.metainfo["classes"] == ("cat", "dog")
    item = dataset[0]
    sample = item["data_samples"]
    assert item["inputs"].shape == (3, 60, 80) and item["inputs"].dtype == torch.uint8
    assert sample.gt_instances.bboxes.tolist() == [[10, 5, 40, 25]]  # x2 = x + w, no +1
    assert sample.gt_instances.labels.tolist() == [0] and sample.gt_instances.areas.tolist() == [500]
    assert sample.ignored_instances.bboxes.tolist() == [[0, 30, 50, 55]]  # the crowd box
    assert sample.img_id == 1 and sample.ori_shape == (60, 80)
    assert dataset[1]["data_samples"].gt_instances.labels.tolist() == [1]


def test_coco_test_mode_keeps_images_without_boxes(tmp_path):
    _coco(tmp_path)
    _write_image(tmp_path / "img" / "missing.jpg")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = CocoDataset(data_root=str(tmp_path), ann_file="ann.json", data_prefix=dict(img="img/"),
                              test_mode=True, classes=["dog"])
    assert len(dataset) == 4 and dataset.metainfo["classes"] == ("dog",)
    assert [len(dataset.get_data_info(i)["instances"]) for i in range(4)] == [1, 0, 1, 0]
    assert not [w for w in record if issubclass(w.category, DatasetWarning) and "image" in str(w.message)]


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDataset(data_root=str(tmp_path), ann_file="nope.json")


# -------------------------------------------------------------------------------------------------- VOC
def test_voc_reader_difficult_and_unknown_classes(tmp_path):
    xml = """<annotation><size><width>80</width><height>60</height><depth>3</depth></size>
      <object><name>dog</name><difficult>0</difficult><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>40</xmax>
      <ymax>50</ymax></bndbox></object>
      <object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30.0</xmax>
      <ymax>20</ymax></bndbox></object>
      <object><name>unicorn</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>
      <ymax>9</ymax></bndbox></object></annotation>"""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "x1.xml").write_text(xml)
    _write_image(tmp_path / "images" / "x1.jpg")
    with pytest.warns(DatasetWarning, match="skipped 1 object"):
        dataset = VOCDataset(data_root=str(tmp_path), pipeline=PIPELINE)
    sample = dataset[0]["data_samples"]
    assert sample.gt_instances.bboxes.tolist() == [[5, 6, 40, 50]]
    assert sample.gt_instances.labels.tolist() == [11]  # dog
    assert sample.ignored_instances.bboxes.tolist() == [[1, 2, 30, 20]]  # difficult person


@pytest.mark.skipif(not VOC.is_dir(), reason=f"real samples not found under {VOC}")
def test_voc_reads_the_shared_samples():
    dataset = VOCDataset(data_root=str(VOC), pipeline=PIPELINE)
    assert len(dataset) == 2
    first = dataset[0]["data_samples"]
    assert first.ori_shape == (500, 353)
    assert first.gt_instances.bboxes.tolist() == [[48, 240, 195, 371], [8, 12, 352, 498]]
    assert [dataset.metainfo["classes"][i] for i in first.gt_instances.labels] == ["dog", "person"]


# ---------------------------------------------------------------------------------------------- transforms
def _results() -> dict:
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = 255
    return dict(img=img, img_shape=(100, 200), ori_shape=(100, 200), instances=[
        dict(bbox=[10, 20, 60, 80], bbox_label=2, ignore_flag=0, area=2000.0),
        dict(bbox=[150, 0, 200, 100], bbox_label=0, ignore_flag=1)])


def test_resize_keeps_the_ratio_and_scales_boxes():
    out = DetResize(scale=(1333, 800))(LoadDetAnnotations()(_results()))
    # factor min(1333 / 200, 800 / 100) = 6.665: (200, 100) -> (1333, 667) (int(x + 0.5))
    assert out["img"].shape == (667, 1333, 3) and out["img_shape"] == (667, 1333)
    sx, sy = out["scale_factor"]
    assert (sx, sy) == (1333 / 200, 667 / 100)
    assert np.allclose(out["gt_bboxes"][0], [10 * sx, 20 * sy, 60 * sx, 80 * sy])
    assert np.allclose(out["gt_bboxes"][1], [150 * sx, 0, 1333, 667])  # clipped to the new image
    assert out["gt_areas"][0] == pytest.approx(2000 * sx * sy) and out["gt_areas"][1] == pytest.approx(5000 * sx * sy)
    assert DetResize(scale=(50, 40), keep_ratio=False)(_results())["img"].shape == (40, 50, 3)


def test_flip_mirrors_boxes_and_pad_rounds_up():
    results = DetRandomFlip(prob=1.0)(LoadDetAnnotations()(_results()))
    assert results["flip"] and results["flip_direction"] == "horizontal"
    assert results["gt_bboxes"].tolist() == [[140, 20, 190, 80], [0, 0, 50, 100]]  # x1' = w - x2
    assert (results["img"][:, 150:] == 255).all() and (results["img"][:, :150] == 0).all()
    assert not DetRandomFlip(prob=0.0)(LoadDetAnnotations()(_results()))["flip"]
    padded = DetPad(size_divisor=32)(results)
    assert padded["img"].shape == (128, 224, 3) and padded["pad_shape"] == (128, 224)
    assert padded["gt_bboxes"].tolist() == results["gt_bboxes"].tolist()
    packed = PackDetInputs()(padded)
    assert packed["inputs"].shape == (3, 128, 224)
    sample = packed["data_samples"]
    assert sample.gt_instances.labels.tolist() == [2] and len(sample.ignored_instances) == 1
    assert sample.flip and sample.pad_shape == (128, 224) and sample.scale_factor == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------------- demo
def test_demo_scene_matches_the_segmentation_demo_and_boxes_fit_the_objects():
    for index in range(3):
        image, objects = make_demo_det_scene(0, 1, index)
        seg_image, mask = make_demo_scene(0, 1, index)
        assert np.array_equal(image, seg_image)
        assert 1 <= len(objects) <= 6
        visible = mask > 1  # every labelled object pixel (1 = background, 0 = boundary band)
        for obj in objects:
            x, y, w, h = obj["bbox"]
            assert 0 <= x < x + w <= 256 and 0 <= y < y + h <= 256 and obj["area"] <= w * h
        covered = np.zeros_like(visible)
        for obj in objects:
            x, y, w, h = obj["bbox"]
            covered[y:y + h, x:x + w] = True
        assert covered[visible].mean() > 0.99  # the boxes cover every visible object pixel
    assert make_demo_det_scene(0, 1, 0)[1] == make_demo_det_scene(0, 1, 0)[1]  # deterministic


def test_demo_dataset_is_generated_once_and_loads(tmp_path):
    root = tmp_path / "demo_det"
    make_demo_det_dataset(str(root), num_train=6, num_val=3)
    marker = (root / "densekit_demo_det.json").stat().st_mtime_ns
    make_demo_det_dataset(str(root), num_train=6, num_val=3)  # complete: nothing rewritten
    assert (root / "densekit_demo_det.json").stat().st_mtime_ns == marker
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        train = DemoDetDataset(data_root=str(root), split="train", num_train=6, num_val=3, pipeline=PIPELINE)
        val = DemoDetDataset(data_root=str(root), split="val", num_train=6, num_val=3, test_mode=True,
                             pipeline=PIPELINE)
    assert len(train) == 6 and len(val) == 3
    assert train.metainfo["classes"] == ("disc", "rectangle", "triangle", "stripes", "checker")
    sample = val[0]["data_samples"]
    _, objects = make_demo_det_scene(0, 1, 0)
    expected = [[x, y, x + w, y + h] for (x, y, w, h) in (o["bbox"] for o in objects if not o["iscrowd"])]
    assert sample.gt_instances.bboxes.tolist() == expected
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_demo_det_dataset(str(tmp_path / "other"))
