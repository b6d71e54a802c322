"""Volume files: NIfTI (``.nii``, ``.nii.gz``) and the Synapse h5 layout (``.npy.h5``), read and written.

Volumes are ``(D, H, W)`` arrays whose slices ``volume[k]`` are what a 2-D model sees, with a voxel spacing
``(D, H, W)`` in mm and a 4x4 affine. For NIfTI this is the nibabel array ``(X, Y, Z)`` transposed to
``(Z, X, Y)`` (axial slices along the last voxel axis; the axis convention is spelled out in
``densekit.datasets.medical.nifti``); ``read_volume`` and ``save_nifti`` are inverse, so a prediction written
with the source affine overlays the source scan in any viewer. Synapse h5 volumes are stored ``(D, H, W)``
and read by one reader, ``read_h5_volume``, for the dataset and for inference alike. Files are written
atomically (``densekit.fileio.save_atomically``).
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import h5py
import nibabel as nib
import numpy as np

from ...fileio import save_atomically
from ..bad_samples import BadSampleError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
H5_SUFFIXES = (".npy.h5", ".h5")
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *H5_SUFFIXES)


def is_volume_file(path: str) -> bool:
    return str(path).endswith(VOLUME_SUFFIXES)


def case_name(path: str) -> str:
    """File name without ``.nii.gz`` / ``.nii`` / ``.npy.h5`` (``la_003`` for ``imagesTr/la_003.nii.gz``)."""
    name = osp.basename(path)
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_volumes(path: str) -> list[str]:
    """``path`` itself if it is a volume file, else the volume files in the folder ``path`` (sorted)."""
    if osp.isdir(path):
        found = sorted(osp.join(path, n) for n in os.listdir(path) if is_volume_file(n) and not n.startswith("."))
        if not found:
            raise FileNotFoundError(f"no {VOLUME_SUFFIXES} files in {path}")
        return found
    if not osp.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    return [path]


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """The diagonal NIfTI affine of a ``(D, H, W)`` volume with this spacing (nibabel axes ``(H, W, D)``)."""
    d, h, w = (float(s) for s in spacing)
    return np.diag([h, w, d, 1.0])


# -- NIfTI --------------------------------------------------------------------------------------------------
def nifti_spacing_dhw(zooms: Sequence[float]) -> tuple[float, float, float]:
    """Header zooms ``(X, Y, Z)`` -> spacing in densekit's ``(D, H, W) = (Z, X, Y)`` order."""
    return float(zooms[2]), float(zooms[0]), float(zooms[1])


def check_nifti_shape(path: str, shape: Sequence[int], channel: int | None) -> None:
    """``BadSampleError`` naming ``path`` unless ``shape`` is a 3-D volume, or 4-D with a valid ``channel``."""
    if len(shape) == 4:
        if channel is None:
            raise BadSampleError(f"{path} is 4-D {tuple(shape)} (several channels); pass channel=i to pick one")
        if not 0 <= channel < shape[3]:
            raise BadSampleError(f"{path} has {shape[3]} channels {tuple(shape)}; channel={channel} is out of range")
    elif len(shape) != 3:
        raise BadSampleError(f"{path}: expected a 3-D volume (X, Y, Z), or 4-D with channels last, "
                             f"got {len(shape)}-D shape {tuple(shape)}")


def load_nifti(path: str, channel: int | None = None, dtype: type | None = np.float32
               ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(volume (D, H, W), spacing (D, H, W) mm, affine (4, 4))`` of a NIfTI file (see the axis convention).

    ``dtype`` None keeps the stored type (after nibabel's scaling). A 4-D image (several modalities/channels
    on the last axis) needs ``channel`` to pick one.
    """
    img = nib.load(path)
    check_nifti_shape(path, img.shape, channel)
    array = np.asanyarray(img.dataobj)
    if array.ndim == 4:
        array = array[..., channel]
    volume = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=dtype)
    return volume, nifti_spacing_dhw(img.header.get_zooms()[:3]), np.asarray(img.affine, np.float64)


def save_nifti(labels: np.ndarray, affine: np.ndarray, path: str) -> str:
    """Write a ``(D, H, W)`` label volume as NIfTI with ``affine`` (back to nibabel's ``(X, Y, Z)`` axes),
    atomically (temporary file + rename). ``.nii.gz`` compresses. Returns ``path``."""
    path = str(path)
    if not path.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"a NIfTI path ends with {NIFTI_SUFFIXES}, got {path}")
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255) else np.int16
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(1, 2, 0)).astype(dtype), np.asarray(affine))
    image.header.set_data_dtype(dtype)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return str(save_atomically(path, lambda tmp: nib.save(image, tmp)))


# -- Synapse h5 ---------------------------------------------------------------------------------------------
def h5_depth(path: str, key: str = "image") -> int:
    """The number of slices ``D`` of the ``(D, H, W)`` dataset ``key``, without reading the voxels."""
    with h5py.File(path, "r") as f:
        return int(f[key].shape[0])


def read_h5_volume(path: str, key: str = "image", dtype: type | None = np.float32, missing_ok: bool = False
                   ) -> tuple[np.ndarray | None, tuple[float, float, float]]:
    """``(array (D, H, W), spacing (D, H, W) mm)`` of the dataset ``key`` of a Synapse-layout h5 file.

    ``dtype`` None keeps the stored type (labels). The spacing is the ``spacing`` attribute of the dataset or
    the file, else ``(1, 1, 1)`` (the Synapse files store none). A missing ``key`` raises ``KeyError`` naming
    what the file holds, or gives ``(None, spacing)`` with ``missing_ok``; an array that is not 3-D raises
    ``ValueError``.
    """
    with h5py.File(path, "r") as f:
        if key not in f:
            if missing_ok:
                return None, (1.0, 1.0, 1.0)
            raise KeyError(f"{path} has no {key!r} dataset (found {sorted(f.keys())}); Synapse-layout volumes "
                           "hold 'image' and 'label' arrays of shape (D, H, W)")
        array = np.asarray(f[key][:], dtype=dtype)
        spacing = f[key].attrs.get("spacing", f.attrs.get("spacing", (1.0, 1.0, 1.0)))
    if array.ndim != 3:
        raise ValueError(f"{path}:{key} should be (D, H, W), got {array.shape}")
    return array, tuple(float(s) for s in spacing)


def save_h5(labels: np.ndarray, path: str, image: np.ndarray | None = None,
            spacing: Sequence[float] | None = None) -> str:
    """Write ``label`` (and optionally ``image``) ``(D, H, W)`` in the Synapse h5 layout, with a ``spacing``
    attribute when given, atomically. Returns ``path``."""
    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("label", data=np.asarray(labels), compression="gzip")
            if image is not None:
                f.create_dataset("image", data=np.asarray(image, np.float32), compression="gzip")
            if spacing is not None:
                f.attrs["spacing"] = np.asarray(spacing, np.float64)

    return str(save_atomically(path, write))


# -- either format ------------------------------------------------------------------------------------------
def read_volume(path: str, key: str = "image", channel: int | None = None
                ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(array (D, H, W) float32, spacing (D, H, W) mm, affine (4, 4))`` of a ``.nii`` / ``.nii.gz`` /
    ``.npy.h5`` file.

    NIfTI: intensities as stored (not windowed), spacing from the header zooms, the file's affine, ``channel``
    of a 4-D image. h5: the dataset ``key`` (``'image'`` or ``'label'``) read by ``read_h5_volume``, and the
    diagonal affine of its spacing.
    """
    path = str(path)
    if path.endswith(NIFTI_SUFFIXES):
        return load_nifti(path, channel=channel)
    if path.endswith(H5_SUFFIXES):
        array, spacing = read_h5_volume(path, key)
        return array, spacing, spacing_affine(spacing)
    raise ValueError(f"unsupported volume file {path}: expected one of {VOLUME_SUFFIXES}")
