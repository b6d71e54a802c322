"""NIfTI slice datasets: MSD layout, explicit files, axis convention, windows, caching, label checks, mr_crop."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers.paths import SHARED_DATA

from densekit.datasets.medical.io import load_nifti
from densekit.datasets.medical.nifti import NiftiSliceDataset, read_dataset_json
from densekit.datasets.medical.transforms import window_intensity
from densekit.registry import DATASETS

AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _volume(seed: int, depth: int, bad_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """HU-like image (X=20, Y=24, Z=depth) int16 and a label with classes 0..2."""
    rng = np.random.default_rng(seed)
    image = rng.integers(-1000, 1000, (20, 24, depth)).astype(np.int16)
    label = np.zeros((20, 24, depth), np.uint8)
    label[4:10, 6:12, :] = 1
    label[12:15, 3:8, depth // 2] = 2
    if bad_label:
        label[0, 0, 0] = 7
    return image, label


def _write_msd(root: Path, label_style: str = "msd", bad_label: bool = False) -> dict:
    cases = {}
    for i, depth in enumerate((5, 3)):
        name = f"liver_{i:03d}"
        image, label = _volume(i, depth, bad_label and i == 1)
        _save(root / "imagesTr" / f"{name}.nii.gz", image)
        _save(root / "labelsTr" / f"{name}.nii.gz", label)
        cases[name] = (image, label)
    (root / "imagesTr" / "._liver_000.nii.gz").write_bytes(b"macOS resource fork")
    labels = {"0": "background", "1": "liver", "2": "tumour"} if label_style == "msd" else \
        {"background": 0, "liver": 1, "tumour": 2}
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in cases]
    (root / "dataset.json").write_text(json.dumps({"name": "Liver", "modality": {"0": "CT"}, "labels": labels,
                                                   "training": training, "test": []}))
    return cases


def test_msd_layout_slices_along_the_last_axis_with_spacing_and_affine(tmp_path):
    cases = _write_msd(tmp_path)
    ds = DATASETS.build(dict(type="NiftiSliceDataset", data_root=str(tmp_path),
                             pipeline=[dict(type="PackMedicalInputs")]))
    assert ds.metainfo["classes"] == ("background", "liver", "tumour")
    assert len(ds) == 8  # 5 + 3 axial slices
    image, label = cases["liver_000"]
    info = ds.get_data_info(2)
    np.testing.assert_allclose(info["img"], window_intensity(image[:, :, 2], "ct"))  # (X, Y) slice, CT window
    np.testing.assert_array_equal(info["gt_seg_map"], label[:, :, 2])
    assert info["img"].shape == (20, 24) and 0 <= info["img"].min() and info["img"].max() <= 1
    assert info["spacing"] == pytest.approx((2.5, 0.8, 0.8))  # (D, H, W) = zooms (Z, X, Y)
    np.testing.assert_allclose(info["affine"], AFFINE)
    assert (info["case_name"], info["slice_index"], info["num_slices"]) == ("liver_000", 2, 5)
    sample = ds[6]["data_samples"]  # the second case
    assert sample.metainfo["case_name"] == "liver_001" and sample.metainfo["slice_index"] == 1
    assert ds[6]["inputs"].shape == (1, 20, 24) and ds[6]["inputs"].dtype == torch.float32


def test_slices_are_read_once_per_volume(tmp_path, monkeypatch):
    _write_msd(tmp_path)
    ds = NiftiSliceDataset(data_root=str(tmp_path), cache_size=1)
    calls = []
    load = ds.load_volume
    monkeypatch.setattr(ds, "load_volume", lambda i, lb: calls.append(i) or load(i, lb))
    for k in range(len(ds)):
        ds.get_data_info(k)
    assert [Path(c).name for c in calls] == ["liver_000.nii.gz", "liver_001.nii.gz"]


def test_nnunet_labels_folder_pairing_and_case_subsets(tmp_path):
    cases = _write_msd(tmp_path, label_style="nnunet")
    classes, pairs = read_dataset_json(str(tmp_path / "dataset.json"))
    assert classes == ["background", "liver", "tumour"] and len(pairs) == 2
    (tmp_path / "dataset.json").unlink()
    for name in cases:  # nnU-Net v2 names images with a channel suffix
        (tmp_path / "imagesTr" / f"{name}.nii.gz").rename(tmp_path / "imagesTr" / f"{name}_0000.nii.gz")
    ds = NiftiSliceDataset(data_root=str(tmp_path), classes=("bg", "liver", "tumour"), cases=["liver_001_0000"])
    assert len(ds) == 3 and ds.get_data_info(0)["seg_map_path"].endswith("labelsTr/liver_001.nii.gz")


def test_explicit_files_percentile_window_and_unlabelled(tmp_path):
    image, label = _volume(0, 4)
    _save(tmp_path / "a.nii.gz", image)
    _save(tmp_path / "a_label.nii", label)
    ds = NiftiSliceDataset(data_root=str(tmp_path), images=["a.nii.gz"], labels=["a_label.nii"],
                           classes=("bg", "x", "y"), window="mr")
    volume = np.stack([ds.get_data_info(k)["img"] for k in range(4)])
    np.testing.assert_allclose(volume, window_intensity(image.transpose(2, 0, 1), (0.5, 99.5), "percentile"))
    unlabelled = NiftiSliceDataset(images=[str(tmp_path / "a.nii.gz")], classes=("bg", "x"), window=(-100, 100))
    info = unlabelled.get_data_info(0)
    assert "gt_seg_map" not in info and info["seg_map_path"] is None
    volume, spacing, affine = load_nifti(str(tmp_path / "a.nii.gz"))
    assert volume.shape == (4, 20, 24) and spacing == pytest.approx((2.5, 0.8, 0.8))


def test_label_out_of_range_names_the_file_and_values(tmp_path):
    _write_msd(tmp_path, bad_label=True)
    ds = NiftiSliceDataset(data_root=str(tmp_path))
    ds.get_data_info(0)
    with pytest.raises(ValueError, match=r"labelsTr/liver_001\.nii\.gz.*\{7\}"):
        ds.get_data_info(5)


def test_classes_are_required_and_files_must_exist(tmp_path):
    image, _ = _volume(0, 2)
    _save(tmp_path / "a.nii.gz", image)
    with pytest.raises(ValueError, match="class names"):
        NiftiSliceDataset(images=[str(tmp_path / "a.nii.gz")])
    with pytest.raises(FileNotFoundError, match="b.nii.gz"):
        NiftiSliceDataset(images=[str(tmp_path / "a.nii.gz")], labels=[str(tmp_path / "b.nii.gz")],
                          classes=("bg", "x"))


MR = SHARED_DATA / "medical" / "mr_crop.nii.gz"
MR_LABEL = SHARED_DATA / "medical" / "mr_crop_label.nii.gz"


@pytest.mark.skipif(not (MR.is_file() and MR_LABEL.is_file()), reason="needs ../shared/data/medical/mr_crop*.nii.gz")
def test_mr_crop_slices_train_a_swin_unet_step():
    from densekit.models import SwinUnet

    ds = NiftiSliceDataset(images=[str(MR)], labels=[str(MR_LABEL)], classes=("background", "structure_1",
                                                                              "structure_2"),
                           window="mr", pipeline=[dict(type="RandomGenerator", output_size=(32, 32)),
                                                  dict(type="PackMedicalInputs")])
    source = nib.load(str(MR))
    assert len(ds) == source.shape[2]
    labels = np.stack([ds.get_data_info(k)["gt_seg_map"] for k in range(len(ds))])
    assert labels.shape == (35, 35, 51) and set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_allclose(ds.get_data_info(0)["affine"], source.affine)
    np.random.seed(0)
    items = [ds[k] for k in (10, 17)]
    torch.manual_seed(0)
    model = SwinUnet(backbone=dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4,
                                   in_chans=1, drop_path_rate=0.0), decode_head=dict(num_classes=3))
    batch = model.data_preprocessor({"inputs": [i["inputs"] for i in items],
                                     "data_samples": [i["data_samples"] for i in items]}, training=True)
    losses = model(**batch, mode="loss")
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    total.backward()
    assert torch.isfinite(total)
