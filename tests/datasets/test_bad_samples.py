"""Bad input: each error names the file (and index) and what was expected; on_bad_sample='skip' counts skips."""
from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from densekit.datasets import NiftiSliceDataset, SegDataset
from densekit.datasets.bad_samples import BadSampleError, DatasetWarning, UnreadableFileError
from densekit.datasets.loading import LoadImageFromFile
from densekit.datasets.seg.transforms import LoadAnnotations

CLASSES = ["a", "b", "c"]
PIPELINE = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]


def _pair(root: Path, name: str, image: np.ndarray | None = None, mask: np.ndarray | None = None,
          suffix: str = ".png") -> None:
    (root / "img").mkdir(exist_ok=True)
    (root / "ann").mkdir(exist_ok=True)
    image = np.full((16, 20, 3), 50, np.uint8) if image is None else image
    mask = np.ones((16, 20), np.uint8) if mask is None else mask
    assert cv2.imwrite(str(root / "img" / f"{name}{suffix}"), image)
    assert cv2.imwrite(str(root / "ann" / f"{name}.png"), mask)


def _dataset(root: Path, **kwargs) -> SegDataset:
    return SegDataset(data_root=str(root), img_dir="img", ann_dir="ann", img_suffix=".png", classes=CLASSES,
                      pipeline=PIPELINE, **kwargs)


def test_truncated_png_and_jpeg_are_refused_naming_the_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for suffix in (".png", ".jpg"):
        good = tmp_path / f"good{suffix}"
        cv2.imwrite(str(good), image)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        assert LoadImageFromFile()(dict(img_path=str(good)))["img"].shape == (32, 32, 3)
        with pytest.raises(UnreadableFileError, match=rf"cut\{suffix}") as error:
            LoadImageFromFile()(dict(img_path=str(cut)))
        assert isinstance(error.value, OSError) and "truncated" in str(error.value)


def test_gray_and_rgba_are_converted_16_bit_is_refused(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    img = LoadImageFromFile()(dict(img_path=str(tmp_path / "gray.png")))["img"]
    assert img.shape == (12, 10, 3) and all(np.array_equal(img[..., c], gray) for c in range(3))
    bgr = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([bgr, np.full((12, 10), 9, np.uint8)]))
    assert np.array_equal(LoadImageFromFile()(dict(img_path=str(tmp_path / "rgba.png")))["img"], bgr)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((12, 10), 4000, np.uint16))
    with pytest.raises(BadSampleError, match=r"deep\.png has uint16 pixels.*8-bit"):
        LoadImageFromFile()(dict(img_path=str(tmp_path / "deep.png")))
    cv2.imwrite(str(tmp_path / "mask16.png"), np.full((12, 10), 300, np.uint16))
    with pytest.raises(BadSampleError, match=r"mask16\.png has uint16 values 300\.\.300"):
        LoadAnnotations()(dict(seg_map_path=str(tmp_path / "mask16.png")))


def test_size_mismatch_and_out_of_range_labels_name_index_and_file(tmp_path):
    _pair(tmp_path, "a_ok")
    _pair(tmp_path, "b_small", mask=np.ones((8, 20), np.uint8))
    labels = np.ones((16, 20), np.uint8)
    labels[0, :3] = [3, 7, 255]  # 3 and 7 are not classes of a 3-class dataset; 255 is ignored
    _pair(tmp_path, "c_labels", mask=labels)
    ds = _dataset(tmp_path)
    assert ds[0]["inputs"].shape == (3, 16, 20)
    with pytest.raises(BadSampleError, match=r"SegDataset\[1\] .*b_small\.png.*8x20 \(HxW\).*16x20"):
        ds[1]
    with pytest.raises(BadSampleError, match=r"SegDataset\[2\] .*c_labels\.png has label values \{3, 7\}.*"
                                             r"3 classes: expected 0\.\.2 or the ignore value 255"):
        ds[2]


def test_skip_replaces_bad_samples_and_counts_them(tmp_path):
    _pair(tmp_path, "a_ok")
    _pair(tmp_path, "b_small", mask=np.ones((8, 20), np.uint8))
    (tmp_path / "img" / "c_broken.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(tmp_path / "ann" / "c_broken.png"), np.ones((16, 20), np.uint8))
    ds = _dataset(tmp_path, on_bad_sample="skip")
    with pytest.warns(DatasetWarning, match=r"skipped .*b_small\.png.*1 skipped so far"):
        item = ds[1]  # replaced by a good sample
    assert item["data_samples"].img_path.endswith("a_ok.png")
    with pytest.warns(DatasetWarning, match=r"c_broken\.png"):
        ds[2]
    assert sorted(Path(p).name for p in ds.skipped) == ["b_small.png", "c_broken.png"]
    assert "16x20" in ds.skipped[str(tmp_path / "img" / "b_small.png")]
    test_ds = _dataset(tmp_path, on_bad_sample="skip", test_mode=True)  # evaluation never skips silently
    with pytest.raises(UnreadableFileError, match=r"c_broken\.png"):
        test_ds[2]
    with pytest.raises(ValueError, match="on_bad_sample must be one of"):
        _dataset(tmp_path, on_bad_sample="ignore")


def test_split_file_missing_entries_raise_or_are_skipped(tmp_path):
    _pair(tmp_path, "a_ok")
    (tmp_path / "split.txt").write_text("a_ok\nghost\n")
    with pytest.raises(FileNotFoundError, match=r"split\.txt lists 'ghost'.*ghost\.png does not exist"):
        _dataset(tmp_path, split="split.txt")
    with pytest.warns(DatasetWarning, match="ghost"):
        ds = _dataset(tmp_path, split="split.txt", on_bad_sample="skip")
    assert len(ds) == 1 and [Path(p).name for p in ds.skipped] == ["ghost.png"]
    (tmp_path / "none.txt").write_text("ghost\n")
    with pytest.raises(FileNotFoundError, match="is empty"), pytest.warns(DatasetWarning):
        _dataset(tmp_path, split="none.txt", on_bad_sample="skip")
    (tmp_path / "img" / "a_ok.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"SegDataset is empty: no image found for .*img/\*\.png"):
        _dataset(tmp_path)


def _nifti(path: Path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def test_nifti_with_the_wrong_number_of_dimensions(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz", np.zeros((8, 8, 3), np.float32))
    good_label = _nifti(tmp_path / "good_label.nii.gz", np.zeros((8, 8, 3), np.uint8))
    flat = _nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.float32))
    flat_label = _nifti(tmp_path / "flat_label.nii.gz", np.zeros((8, 8), np.uint8))
    args = dict(classes=["background", "organ"])
    with pytest.raises(BadSampleError, match=r"flat\.nii\.gz: expected a 3-D volume .*got 2-D shape \(8, 8\)"):
        NiftiSliceDataset(images=[good, flat], labels=[good_label, flat_label], **args)
    with pytest.warns(DatasetWarning, match=r"flat\.nii\.gz"):
        ds = NiftiSliceDataset(images=[good, flat], labels=[good_label, flat_label], on_bad_sample="skip", **args)
    assert len(ds) == 3 and list(ds.skipped) == [flat]
    with pytest.raises(BadSampleError, match=r"flat_label\.nii\.gz: expected a 3-D volume"):
        NiftiSliceDataset(images=[good], labels=[flat_label], **args)
