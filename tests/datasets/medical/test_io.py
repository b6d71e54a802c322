"""Volume files: NIfTI and Synapse h5 round trips (affine, orientation, spacing), one h5 reader, listing."""
from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from densekit.datasets.medical.io import list_volumes, read_volume, save_h5, save_nifti
from densekit.datasets.medical.synapse import read_synapse_volume

AFFINE = np.array([[-0.7, 0, 0, 120.0], [0, 0.75, 0, -30.0], [0, 0, 3.0, 12.0], [0, 0, 0, 1]])


def _volume(depth: int = 10, height: int = 40, width: int = 36) -> np.ndarray:
    volume = np.zeros((depth, height, width), np.float32)
    volume[:, 10:30, 8:20] = 0.5
    volume[2:6, 15:25, 22:32] = 1.0
    return volume


def test_nifti_round_trip_keeps_the_affine_and_orientation(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(-500, 500, (20, 24, 6)).astype(np.int16)  # nibabel (X, Y, Z)
    nib.save(nib.Nifti1Image(source, AFFINE), str(tmp_path / "scan.nii.gz"))
    volume, spacing, affine = read_volume(str(tmp_path / "scan.nii.gz"))
    assert volume.shape == (6, 20, 24) and spacing == pytest.approx((3.0, 0.7, 0.75))
    np.testing.assert_allclose(affine, AFFINE)
    labels = (volume > 0).astype(np.uint8)
    path = save_nifti(labels, affine, str(tmp_path / "out" / "scan_pred.nii.gz"))
    saved = nib.load(path)
    np.testing.assert_allclose(saved.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), (source > 0).astype(np.uint8))  # overlays the scan
    assert saved.get_data_dtype() == np.uint8
    back, _, back_affine = read_volume(path)
    np.testing.assert_array_equal(back, labels)
    save_nifti(labels, affine, str(tmp_path / "out" / "plain.nii"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plain.nii", "scan_pred.nii.gz"]


def test_h5_volumes_read_and_write(tmp_path):
    volume = _volume(4, 16, 12)
    with h5py.File(tmp_path / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=volume)
        f.create_dataset("label", data=(volume > 0).astype(np.float32))
    array, spacing, affine = read_volume(str(tmp_path / "case0001.npy.h5"))
    np.testing.assert_array_equal(array, volume)
    assert spacing == (1.0, 1.0, 1.0) and np.allclose(affine, np.eye(4))
    path = save_h5((volume > 0).astype(np.uint8), str(tmp_path / "pred" / "case0001.npy.h5"), image=volume,
                   spacing=(2.5, 0.8, 0.9))
    label, spacing, affine = read_volume(path, key="label")
    np.testing.assert_array_equal(label, volume > 0)
    assert spacing == (2.5, 0.8, 0.9) and np.allclose(np.diag(affine), [0.8, 0.9, 2.5, 1])
    assert list_volumes(str(tmp_path)) == [str(tmp_path / "case0001.npy.h5")]
    with pytest.raises(ValueError, match="unsupported"):
        read_volume(str(tmp_path / "x.png"))


def test_one_h5_reader_serves_the_synapse_dataset_and_inference(tmp_path):
    volume = _volume(6, 40, 36)
    path = str(tmp_path / "case0001.npy.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=volume)
        f.create_dataset("label", data=np.rint(volume * 2).astype(np.float32))  # Synapse stores labels as floats
    image, label = read_synapse_volume(path, num_classes=3)
    np.testing.assert_array_equal(image, read_volume(path)[0])
    np.testing.assert_array_equal(label, read_volume(path, key="label")[0])
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2}
    with h5py.File(tmp_path / "unlabelled.h5", "w") as f:
        f.create_dataset("image", data=volume)
    assert read_synapse_volume(str(tmp_path / "unlabelled.h5"))[1] is None
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("label", data=volume[0])
    with pytest.raises(KeyError, match=r"flat\.h5 has no 'image' dataset \(found \['label'\]\)"):
        read_synapse_volume(str(tmp_path / "flat.h5"))
    with pytest.raises(ValueError, match=r"flat\.h5:label should be \(D, H, W\)"):
        read_volume(str(tmp_path / "flat.h5"), key="label")
