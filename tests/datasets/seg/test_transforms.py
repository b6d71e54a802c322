"""Transforms keep image and labels aligned and reproduce mmcv/mmseg semantics."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from densekit.datasets.loading import LoadImageFromFile
from densekit.datasets.seg.transforms import (
    LoadAnnotations,
    PackSegInputs,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    RandomResize,
    Resize,
    reduce_zero_label,
)
from densekit.registry import TRANSFORMS
from densekit.structures import SegDataSample


def _coord_results(h: int = 64, w: int = 64) -> dict:
    """An image whose pixels encode their coordinates (B = column, G = row) and a mask derived from them,
    so any geometric transform can be checked for image/mask alignment."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)
    seg = (xx >= 40).astype(np.uint8)
    return dict(img=img, gt_seg_map=seg, img_shape=(h, w), ori_shape=(h, w), seg_fields=["gt_seg_map"])


def _aligned(results: dict) -> bool:
    return np.array_equal(results["gt_seg_map"], (results["img"][..., 0] >= 40).astype(np.uint8))


@pytest.fixture
def files(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    seg = np.tile(np.arange(40, dtype=np.uint8) % 4, (30, 1))
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a_mask.png"), seg)
    return dict(img_path=str(tmp_path / "a.png"), seg_map_path=str(tmp_path / "a_mask.png"), img=img, seg=seg)


def test_loading_gives_bgr_uint8_and_single_channel_mask(files):
    results = LoadImageFromFile()(dict(img_path=files["img_path"]))
    assert results["img"].dtype == np.uint8 and results["img"].shape == (30, 40, 3)
    assert np.array_equal(results["img"], files["img"])
    assert results["img_shape"] == results["ori_shape"] == (30, 40)
    results = LoadAnnotations()(dict(results, seg_map_path=files["seg_map_path"], reduce_zero_label=False))
    assert results["gt_seg_map"].shape == (30, 40) and results["gt_seg_map"].dtype == np.uint8
    assert np.array_equal(results["gt_seg_map"], files["seg"]) and "gt_seg_map" in results["seg_fields"]


def test_unreadable_file_error_names_it(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        LoadImageFromFile()(dict(img_path=str(bad)))
    with pytest.raises(OSError, match="missing.png"):
        LoadAnnotations()(dict(seg_map_path=str(tmp_path / "missing.png")))


def test_reduce_zero_label_mapping(files):
    seg = np.array([[0, 1, 2], [150, 254, 255]], np.uint8)
    assert reduce_zero_label(seg).tolist() == [[255, 0, 1], [149, 253, 255]]
    results = LoadAnnotations()(dict(seg_map_path=files["seg_map_path"], reduce_zero_label=True))
    expected = np.where(files["seg"] == 0, 255, files["seg"].astype(int) - 1)
    assert np.array_equal(results["gt_seg_map"], expected)
    with pytest.raises(ValueError, match="reduce_zero_label"):
        LoadAnnotations(reduce_zero_label=True)(dict(seg_map_path=files["seg_map_path"], reduce_zero_label=False))


def test_resize_keeps_ratio_like_mmcv():
    results = Resize(scale=(2048, 512), keep_ratio=True)(_coord_results(300, 400) | dict(gt_seg_map=None))
    assert results["img"].shape == (512, 683, 3)  # factor min(2048/400, 512/300) = 512/300
    assert results["img_shape"] == (512, 683)
    assert results["scale_factor"] == pytest.approx((683 / 400, 512 / 300))
    results = Resize(scale=(50, 20), keep_ratio=False)(_coord_results(64, 64))
    assert results["img"].shape == (20, 50, 3) and results["gt_seg_map"].shape == (20, 50)


def test_random_resize_scale_range_and_nearest_labels():
    np.random.seed(0)
    shorts = []
    for _ in range(60):
        results = _coord_results(48, 64)
        results["gt_seg_map"] = (np.arange(48 * 64).reshape(48, 64) % 3).astype(np.uint8)
        results = RandomResize(scale=(256, 64), ratio_range=(0.5, 2.0))(results)
        h, w = results["img"].shape[:2]
        shorts.append(h)
        assert results["gt_seg_map"].shape == (h, w)
        assert set(np.unique(results["gt_seg_map"])) <= {0, 1, 2}  # nearest: no new label values
        assert w == int(64 * h / 48 + 0.5) or abs(w / h - 64 / 48) < 0.05
    assert min(shorts) >= 32 and max(shorts) <= 128  # short side 64 * [0.5, 2]
    assert min(shorts) < 45 and max(shorts) > 110  # and it spans the range


def test_random_resize_from_scale_list():
    np.random.seed(1)
    sizes = {RandomResize(scale=[(100, 40), (100, 60)], ratio_range=None)(_coord_results())["img"].shape[0]
             for _ in range(40)}
    assert min(sizes) >= 40 and max(sizes) <= 60 and len(sizes) > 3


def test_random_crop_respects_cat_max_ratio_and_alignment():
    np.random.seed(0)
    crop = RandomCrop(crop_size=(32, 32), cat_max_ratio=0.75)
    free = RandomCrop(crop_size=(32, 32))

    def ratio(seg: np.ndarray) -> float:
        counts = np.bincount(seg[seg != 255].ravel(), minlength=2)
        return counts.max() / counts.sum()

    constrained = [crop(_coord_results()) for _ in range(200)]
    unconstrained = [free(_coord_results()) for _ in range(200)]
    assert all(r["img"].shape == (32, 32, 3) and r["img_shape"] == (32, 32) for r in constrained)
    assert all(_aligned(r) for r in constrained + unconstrained)
    ok = np.mean([ratio(r["gt_seg_map"]) < 0.75 for r in constrained])
    base = np.mean([ratio(r["gt_seg_map"]) < 0.75 for r in unconstrained])
    assert ok >= 0.97 and base < 0.7  # ~45% of windows qualify; 11 draws almost always find one


def test_random_crop_ignores_ignore_index_and_small_images():
    np.random.seed(0)
    results = _coord_results()
    results["gt_seg_map"][:, :20] = 255  # ignored pixels do not count towards the majority class
    out = RandomCrop(crop_size=(32, 32), cat_max_ratio=0.75)(results)
    seg = out["gt_seg_map"]
    counts = np.bincount(seg[seg != 255].ravel(), minlength=2)
    assert counts.max() / counts.sum() < 0.75
    small = RandomCrop(crop_size=(100, 100))(_coord_results(40, 50))
    assert small["img"].shape == (40, 50, 3)


def test_flip_moves_image_and_mask_together():
    results = RandomFlip(prob=1.0)(_coord_results())
    assert results["flip"] is True and results["flip_direction"] == "horizontal"
    assert results["img"][0, 0, 0] == 63 and _aligned(results)
    assert results["gt_seg_map"][0, 0] == 1 and results["gt_seg_map"][0, -1] == 0
    results = RandomFlip(prob=1.0, direction="vertical")(_coord_results())
    assert results["img"][0, 0, 1] == 63 and _aligned(results)
    results = RandomFlip(prob=0.0)(_coord_results())
    assert results["flip"] is False and results["flip_direction"] is None
    assert np.array_equal(results["img"], _coord_results()["img"])
    np.random.seed(0)
    flips = [RandomFlip(prob=0.5)(_coord_results())["flip"] for _ in range(200)]
    assert 70 < sum(flips) < 130


def test_photometric_distortion_changes_only_the_image_reproducibly():
    rng = np.random.default_rng(0)
    base = dict(img=rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), gt_seg_map=np.ones((20, 30), np.uint8))
    outs = []
    for _ in range(2):
        np.random.seed(3)
        outs.append([PhotoMetricDistortion()({k: v.copy() for k, v in base.items()}) for _ in range(5)])
    for a, b in zip(*outs):
        assert a["img"].dtype == np.uint8 and a["img"].shape == (20, 30, 3)
        assert np.array_equal(a["img"], b["img"]) and np.array_equal(a["gt_seg_map"], base["gt_seg_map"])
    assert any(not np.array_equal(o["img"], base["img"]) for o in outs[0])


def test_pad_right_bottom_with_ignore_labels():
    results = Pad(size=(50, 40))(_coord_results(30, 20))  # size is (w, h), as in mmcv
    assert results["img"].shape == (40, 50, 3) and results["gt_seg_map"].shape == (40, 50)
    assert results["pad_shape"] == (40, 50) and results["img_shape"] == (30, 20)
    assert (results["img"][30:] == 0).all() and (results["gt_seg_map"][:, 20:] == 255).all()
    assert np.array_equal(results["img"][:30, :20], _coord_results(30, 20)["img"])
    assert Pad(size=None, size_divisor=32)(_coord_results(33, 64))["pad_shape"] == (64, 64)


def test_pack_seg_inputs_contract():
    results = _coord_results(24, 36) | dict(img_path="x.jpg", seg_map_path="x.png", reduce_zero_label=False)
    packed = PackSegInputs()(results)
    inputs, sample = packed["inputs"], packed["data_samples"]
    assert isinstance(sample, SegDataSample)
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 24, 36) and inputs.is_contiguous()
    assert torch.equal(inputs[0], torch.from_numpy(results["img"][..., 0]))
    gt = sample.gt_sem_seg.data
    assert gt.dtype == torch.int64 and gt.shape == (1, 24, 36)
    meta = sample.metainfo
    assert {"img_path", "seg_map_path", "ori_shape", "img_shape", "pad_shape", "scale_factor", "flip",
            "flip_direction", "reduce_zero_label"} <= set(meta)
    assert meta["pad_shape"] == (24, 36) and meta["flip"] is False


def test_full_training_pipeline_from_registry(files):
    pipeline = [TRANSFORMS.build(cfg) for cfg in (
        dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
        dict(type="RandomResize", scale=(80, 30), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(24, 24), cat_max_ratio=0.75), dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"), dict(type="Pad", size=(24, 24)), dict(type="PackSegInputs"))]
    results = dict(img_path=files["img_path"], seg_map_path=files["seg_map_path"], reduce_zero_label=False,
                   seg_fields=[])
    for transform in pipeline:
        results = transform(results)
    assert results["inputs"].shape == (3, 24, 24)
    assert results["data_samples"].gt_sem_seg.data.shape == (1, 24, 24)
