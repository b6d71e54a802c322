"""Synapse (TransUNet / Swin-Unet layout), the official augmentations and the packer for 1-channel slices."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from densekit.datasets.medical.synapse import SYNAPSE_CLASSES, SynapseDataset, read_synapse_volume
from densekit.datasets.medical.transforms import (
    PackMedicalInputs,
    RandomGenerator,
    ResizeSlice,
    check_label_range,
    window_intensity,
)
from densekit.models.preprocessor import SegDataPreProcessor
from densekit.registry import DATASETS


def _write_synapse(root: Path, bad_label: bool = False) -> dict:
    """Two training slices of case0005, one 4-slice test volume case0001, and the two lists."""
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    (root / "lists" / "lists_Synapse").mkdir(parents=True)
    slices = {}
    for k in range(2):
        image = rng.random((40, 36)).astype(np.float32)
        label = np.zeros((40, 36), np.float32)
        label[10:20, 5:15] = k + 1
        if bad_label and k == 1:
            label[0, 0], label[0, 1] = 9, 12
        name = f"case0005_slice{k:03d}"
        np.savez(root / "train_npz" / f"{name}.npz", image=image, label=label)
        slices[name] = (image, label)
    volume = rng.random((4, 30, 32)).astype(np.float32)
    vlabel = np.zeros((4, 30, 32), np.float32)
    vlabel[1:3, 5:10, 5:10] = 8
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=volume)
        f.create_dataset("label", data=vlabel)
    (root / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(slices) + "\n")
    (root / "lists" / "lists_Synapse" / "test_vol.txt").write_text("case0001\n")
    return dict(slices=slices, volume=volume, vlabel=vlabel)


def test_train_slices_through_the_official_pipeline(tmp_path):
    data = _write_synapse(tmp_path)
    ds = DATASETS.build(dict(type="SynapseDataset", data_root=str(tmp_path), split="train",
                             pipeline=[dict(type="RandomGenerator", output_size=(32, 32)),
                                       dict(type="PackMedicalInputs")]))
    assert len(ds) == 2 and ds.metainfo["classes"] == SYNAPSE_CLASSES
    info = ds.get_data_info(1)
    image, label = data["slices"]["case0005_slice001"]
    np.testing.assert_array_equal(info["img"], image)
    np.testing.assert_array_equal(info["gt_seg_map"], label.astype(np.uint8))
    assert info["case_name"] == "case0005" and info["ori_shape"] == (40, 36)
    np.random.seed(0)
    item = ds[1]
    assert item["inputs"].shape == (1, 32, 32) and item["inputs"].dtype == torch.float32
    sample = item["data_samples"]
    assert sample.gt_sem_seg.data.shape == (1, 32, 32) and sample.gt_sem_seg.data.dtype == torch.int64
    assert set(sample.gt_sem_seg.data.unique().tolist()) <= {0, 2}
    assert sample.metainfo["img_shape"] == (32, 32) and sample.metainfo["ori_shape"] == (40, 36)


def test_test_volumes_become_ordered_slices_with_case_metainfo(tmp_path):
    data = _write_synapse(tmp_path)
    ds = SynapseDataset(data_root=str(tmp_path), split="test_vol", spacings={"case0001": (3.0, 0.7, 0.7)},
                        pipeline=[dict(type="ResizeSlice", output_size=(16, 16)), dict(type="PackMedicalInputs")])
    assert len(ds) == 4
    infos = [ds.get_data_info(k) for k in range(4)]
    assert [i["slice_index"] for i in infos] == [0, 1, 2, 3] and {i["num_slices"] for i in infos} == {4}
    np.testing.assert_array_equal(np.stack([i["img"] for i in infos]), data["volume"])
    np.testing.assert_array_equal(np.stack([i["gt_seg_map"] for i in infos]), data["vlabel"])
    assert len(ds._cache) == 1  # one file read for the four slices
    sample = ds[2]["data_samples"]
    assert ds[2]["inputs"].shape == (1, 16, 16)
    assert sample.gt_sem_seg.data.shape == (1, 30, 32)  # metrics at the stored size
    assert sample.metainfo["spacing"] == (3.0, 0.7, 0.7) and sample.metainfo["case_name"] == "case0001"
    image, label = read_synapse_volume(str(tmp_path / "test_vol_h5" / "case0001.npy.h5"), num_classes=9)
    assert image.shape == label.shape == (4, 30, 32) and label.dtype == np.uint8


def test_label_out_of_range_names_the_file_and_values(tmp_path):
    _write_synapse(tmp_path, bad_label=True)
    ds = SynapseDataset(data_root=str(tmp_path), split="train")
    ds.get_data_info(0)
    with pytest.raises(ValueError, match=r"case0005_slice001\.npz.*\{9, 12\}"):
        ds.get_data_info(1)
    with pytest.raises(ValueError, match=r"vol\.h5.*\{-1, 2\.5\}"):
        check_label_range(np.array([0, -1, 2.5, 1]), 3, "vol.h5")


def test_missing_list_or_file_errors_describe_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="lists_Synapse.*train_npz"):
        SynapseDataset(data_root=str(tmp_path), split="train")
    _write_synapse(tmp_path)
    (tmp_path / "lists" / "lists_Synapse" / "train.txt").write_text("case0009_slice000\n")
    with pytest.raises(FileNotFoundError, match="case0009_slice000"):
        SynapseDataset(data_root=str(tmp_path), split="train")


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    return [np.flip(np.rot90(image, k), axis) for k in range(4) for axis in (0, 1)]


def test_random_generator_follows_the_official_augmentations():
    rng = np.random.default_rng(0)
    image = rng.random((24, 24)).astype(np.float32)
    label = (rng.random((24, 24)) * 3).astype(np.uint8)
    np.random.seed(0)
    out = RandomGenerator((24, 24), rot_flip_prob=1.0)(dict(img=image.copy(), gt_seg_map=label.copy()))
    match = [i for i, d in enumerate(_dihedral(label)) if np.array_equal(d, out["gt_seg_map"])]
    assert match and np.array_equal(_dihedral(image)[match[0]], out["img"])  # same rot90 + flip on both
    np.random.seed(1)
    out = RandomGenerator((24, 24), rot_flip_prob=0.0, rotate_prob=1.0)(dict(img=image.copy(), gt_seg_map=label))
    angles = [a for a in range(-20, 20)
              if np.array_equal(ndimage.rotate(label, a, order=0, reshape=False), out["gt_seg_map"])]
    assert angles and np.array_equal(ndimage.rotate(image, angles[0], order=0, reshape=False), out["img"])
    out = RandomGenerator((12, 30), rot_flip_prob=0.0, rotate_prob=0.0)(dict(img=image, gt_seg_map=label))
    np.testing.assert_allclose(out["img"], ndimage.zoom(image, (12 / 24, 30 / 24), order=3), atol=1e-6)
    np.testing.assert_array_equal(out["gt_seg_map"], ndimage.zoom(label, (12 / 24, 30 / 24), order=0))
    assert out["img_shape"] == (12, 30)


def test_packed_slices_go_through_the_swin_unet_preprocessor_unchanged():
    rng = np.random.default_rng(0)
    items = [ResizeSlice((20, 20))(dict(img=rng.random((30, 26)).astype(np.float32), ori_shape=(30, 26)))
             for _ in range(2)]
    packed = [PackMedicalInputs()(item) for item in items]
    pre = SegDataPreProcessor(mean=[0.0], std=[1.0], bgr_to_rgb=False)
    batch = pre({"inputs": [p["inputs"] for p in packed], "data_samples": [p["data_samples"] for p in packed]})
    assert batch["inputs"].shape == (2, 1, 20, 20) and batch["inputs"].dtype == torch.float32
    torch.testing.assert_close(batch["inputs"][0], packed[0]["inputs"])


def test_window_presets():
    hu = np.array([-1000.0, -125.0, 75.0, 275.0, 2000.0])
    np.testing.assert_allclose(window_intensity(hu, "ct"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(window_intensity(hu, (0.0, 100.0), "percentile"), [0, 875 / 3000, 1075 / 3000,
                                                                               1275 / 3000, 1])
    with pytest.raises(ValueError, match="preset"):
        window_intensity(hu, "pet")
