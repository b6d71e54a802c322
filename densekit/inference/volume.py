"""Slice-wise inference on 3-D volumes, volume I/O (NIfTI, Synapse ``.npy.h5``) and overlay montages.

Volumes are ``(D, H, W)`` arrays whose slices ``volume[k]`` are what the 2-D model sees. For NIfTI this is
the nibabel array ``(X, Y, Z)`` transposed to ``(Z, X, Y)`` (axial slices along the last voxel axis, see
``densekit.datasets.medical.nifti``); ``read_volume`` and ``save_nifti`` are inverse, so a prediction written with
the source affine overlays the source scan in any viewer. Synapse h5 volumes are stored ``(D, H, W)``.

``infer_volume`` runs the slices in batches. ``resize='bilinear'``: each batch is resized to the model's input
size (bicubic), its logits are resized back to the slice size (bilinear) and reduced to labels at once, so at
most one batch of full-resolution per-class logits exists at a time (``batch_size x K x H x W`` floats).
``resize='zoom'``: the official Swin-Unet test's resizing (``scipy.ndimage.zoom`` order 3 in, argmax at the
model's size, order 0 of the labels out), computed exactly on the torch side by ``densekit.datasets.medical.zoom``.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from collections.abc import Sequence

import cv2
import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..datasets.medical.nifti import NIFTI_SUFFIXES, load_nifti
from ..datasets.medical.zoom import zoom_images, zoom_labels
from ..fileio import save_atomically

VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, ".npy.h5", ".h5")
RESIZE_MODES = ("bilinear", "zoom")


# -- inference ----------------------------------------------------------------------------------------------
def _normalizer(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean, std)`` of the model's data preprocessor, if it has them (mmengine models)."""
    pre = getattr(model, "data_preprocessor", None)
    mean, std = getattr(pre, "mean", None), getattr(pre, "std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
    return None


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def infer_volume(model: nn.Module, volume: np.ndarray | torch.Tensor, batch_size: int = 16,
                 input_size: Sequence[int] | None = (224, 224), device: torch.device | str | None = None,
                 progress: bool = True, desc: str | None = None, resize: str = "bilinear") -> np.ndarray:
    """Labels ``(D, H, W)`` (uint8, int16 beyond 256 classes) of a volume ``(D, H, W)`` of model-ready
    intensities (e.g. windowed to [0, 1]).

    Per batch of ``batch_size`` slices, ``resize='bilinear'``: ``(B, 1, H, W)`` -> bicubic resize to
    ``input_size`` (None: run at ``(H, W)``) -> the model's normalisation (its ``data_preprocessor`` mean/std,
    when it has them) -> ``model(x, mode='tensor')`` logits ``(B, K, h, w)`` -> bilinear resize to ``(H, W)``
    -> argmax. ``resize='zoom'``: the official Swin-Unet ``test_single_volume`` semantics, batched: cubic-spline
    ``zoom`` to ``input_size`` -> normalisation -> logits -> argmax at ``(h, w)`` -> nearest ``zoom`` of the
    labels to ``(H, W)`` (equal to scipy's, ``densekit.datasets.medical.zoom``; no full-resolution logits). A tqdm
    bar counts slices (``progress=False`` hides it).
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a volume (D, H, W), got shape {tuple(volume.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else _model_device(model)
    norm = _normalizer(model)
    depth, height, width = volume.shape
    labels = None
    try:
        with tqdm(total=depth, desc=desc, unit="slice", disable=not progress, leave=False) as bar:
            for start in range(0, depth, batch_size):
                x = torch.as_tensor(np.asarray(volume[start:start + batch_size], np.float32)).to(device)[:, None]
                if input_size is not None and tuple(x.shape[-2:]) != tuple(input_size):
                    x = (zoom_images(x, tuple(input_size)) if resize == "zoom" else
                         F.interpolate(x, size=tuple(input_size), mode="bicubic", align_corners=False))
                if norm is not None:
                    x = (x - norm[0].to(device)) / norm[1].to(device)
                logits = model(x, mode="tensor")
                num_classes = logits.shape[1]
                # channels-last: the per-pixel argmax over classes reads contiguous memory (3x faster on CPU)
                logits = logits.contiguous(memory_format=torch.channels_last)
                if resize == "zoom":
                    pred = logits.argmax(1)
                    pred = pred if tuple(pred.shape[-2:]) == (height, width) else zoom_labels(pred, (height, width))
                else:
                    if tuple(logits.shape[-2:]) != (height, width):
                        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                    pred = logits.argmax(1)
                del logits  # the only full-resolution per-class tensor; freed before the next batch
                if labels is None:
                    labels = np.empty((depth, height, width), np.uint8 if num_classes <= 256 else np.int16)
                labels[start:start + len(pred)] = pred.cpu().numpy()
                bar.update(len(pred))
    finally:
        model.train(was_training)
    return labels


# -- volume I/O ---------------------------------------------------------------------------------------------
def is_volume_file(path: str) -> bool:
    return str(path).endswith(VOLUME_SUFFIXES)


def spacing_affine(spacing: Sequence[float]) -> np.ndarray:
    """The diagonal NIfTI affine of a ``(D, H, W)`` volume with this spacing (nibabel axes ``(H, W, D)``)."""
    d, h, w = (float(s) for s in spacing)
    return np.diag([h, w, d, 1.0])


def read_volume(path: str, key: str = "image", channel: int | None = None
                ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """``(array (D, H, W) float32, spacing (D, H, W) mm, affine (4, 4))`` of a ``.nii`` / ``.nii.gz`` /
    ``.npy.h5`` file.

    NIfTI: intensities as stored (not windowed), spacing from the header zooms, the file's affine. h5: the
    dataset ``key`` (``'image'`` or ``'label'``), spacing from a ``spacing`` attribute (file or dataset) if
    present, else ``(1, 1, 1)``, and the diagonal affine of that spacing.
    """
    path = str(path)
    if path.endswith(NIFTI_SUFFIXES):
        return load_nifti(path, channel=channel)
    if path.endswith((".npy.h5", ".h5")):
        with h5py.File(path, "r") as f:
            if key not in f:
                raise KeyError(f"{path} has no {key!r} dataset (found {sorted(f.keys())})")
            array = np.asarray(f[key][:], np.float32)
            spacing = f[key].attrs.get("spacing", f.attrs.get("spacing", (1.0, 1.0, 1.0)))
        if array.ndim != 3:
            raise ValueError(f"{path}:{key} should be (D, H, W), got {array.shape}")
        spacing = tuple(float(s) for s in spacing)
        return array, spacing, spacing_affine(spacing)
    raise ValueError(f"unsupported volume file {path}: expected one of {VOLUME_SUFFIXES}")


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


# -- montage ------------------------------------------------------------------------------------------------
def montage_slices(labels: np.ndarray | None, depth: int, n: int) -> np.ndarray:
    """Up to ``n`` slice indices evenly spread over the slices holding labels (all slices if none do)."""
    candidates = np.arange(depth)
    if labels is not None:
        labelled = np.flatnonzero(np.asarray(labels).reshape(depth, -1).any(1))
        if labelled.size:
            candidates = labelled
    picks = np.linspace(0, len(candidates) - 1, min(n, len(candidates))).round().astype(int)
    return candidates[np.unique(picks)]


def montage(volume: np.ndarray, labels: np.ndarray | None, palette: Sequence[Sequence[int]], n: int = 16,
            alpha: float = 0.5, cols: int | None = None, tile_size: int | None = None,
            class_names: Sequence[str] = ()) -> np.ndarray:
    """An RGB uint8 grid ``(rows * h, cols * w, 3)`` of ``n`` slices with the labels overlaid.

    Slices are picked by ``montage_slices``; intensities are stretched between the volume's 0.5th and 99.5th
    percentiles; labels ``> 0`` are blended with ``palette[label]`` (RGB) at ``alpha``; each tile is marked
    with its slice index. ``tile_size`` scales tiles to that longer side. Empty cells of the grid are black.
    ``class_names`` (index 0 = background, not drawn) adds a legend of the classes 1.. under the grid.
    """
    volume = np.asarray(volume, np.float32)
    if volume.ndim != 3 or (labels is not None and np.shape(labels) != volume.shape):
        raise ValueError(f"volume must be (D, H, W) and labels the same shape, got {volume.shape} and "
                         f"{None if labels is None else np.shape(labels)}")
    index = montage_slices(labels, volume.shape[0], n)
    lo, hi = np.percentile(volume[index], (0.5, 99.5))
    colours = np.asarray(palette, np.float32)
    tiles = []
    for k in index:
        gray = np.clip((volume[k] - lo) / max(hi - lo, 1e-6), 0, 1) * 255
        tile = np.repeat(gray[..., None], 3, axis=2)
        if labels is not None:
            lab = np.asarray(labels[k]).astype(np.int64)
            mask = lab > 0
            tile[mask] = (1 - alpha) * tile[mask] + alpha * colours[np.clip(lab[mask], 0, len(colours) - 1)]
        tile = tile.astype(np.uint8)
        if tile_size is not None:
            scale = tile_size / max(tile.shape[:2])
            size = (max(1, round(tile.shape[1] * scale)), max(1, round(tile.shape[0] * scale)))
            tile = cv2.resize(tile, size, interpolation=cv2.INTER_NEAREST)
        cv2.putText(tile, str(int(k)), (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    if len(class_names) > 1:
        from ..visualization import legend

        strip = legend(list(class_names)[1:], [list(c) for c in palette][1:], grid.shape[1])[..., ::-1]  # BGR->RGB
        grid = np.concatenate([grid, strip], axis=0)
    return grid


def save_png(image: np.ndarray, path: str) -> str:
    """Write an RGB uint8 image as PNG, atomically. Returns ``path``."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[..., ::-1]))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.tobytes())

    return str(save_atomically(path, write))


# -- the volume branch of tools/infer.py ------------------------------------------------------------------
def model_input_size(model: nn.Module, default: Sequence[int] = (224, 224)) -> tuple[int, int]:
    """The slice size the model was trained at: ``ResizeSlice.output_size`` of its config's test pipeline."""
    cfg = getattr(model, "cfg", None)
    dataset = (cfg.get("test_dataloader", {}) or {}).get("dataset", {}) if cfg is not None else {}
    for step in dataset.get("pipeline", []) or []:
        if step.get("type") == "ResizeSlice":
            return tuple(step.get("output_size", default))
    return tuple(default)


def segment_volume_files(model: nn.Module, inputs: Sequence[str], out_dir: str, window: str | None = "auto",
                         batch_size: int = 16, palette: Sequence[Sequence[int]] | None = None,
                         resize: str = "bilinear") -> list[str]:
    """Segment every volume in ``inputs`` (files or folders of ``.nii``/``.nii.gz``/``.npy.h5``); no labels needed.

    Per volume: ``<name>_pred.nii.gz`` (NIfTI input, the source affine) or ``<name>_pred.h5`` (h5 input), and
    ``<name>_montage.png`` (overlays of 16 slices). ``window='auto'`` windows NIfTI intensities as CT
    (``window_intensity(..., 'ct')``) and leaves h5 volumes as stored (Synapse h5 are windowed already);
    ``'ct'``, ``'mr'`` or None force a choice. ``resize``: as in ``infer_volume``. Returns the prediction paths.
    """
    from ..datasets.medical.transforms import window_intensity
    from ..visualization import default_palette

    paths = [p for item in inputs for p in list_volumes(str(item))]
    size = model_input_size(model)
    classes = (getattr(model, "dataset_meta", None) or {}).get("classes", [])
    written = []
    for path in paths:
        volume, spacing, affine = read_volume(path)
        nifti = path.endswith(NIFTI_SUFFIXES)
        chosen = ("ct" if nifti else None) if window == "auto" else window
        if chosen is not None:
            volume = window_intensity(volume, chosen)
        name = osp.basename(path)
        for suffix in VOLUME_SUFFIXES:
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        labels = infer_volume(model, volume, batch_size=batch_size, input_size=size, desc=name, resize=resize)
        pred_path = osp.join(out_dir, f"{name}_pred" + (".nii.gz" if nifti else ".h5"))
        written.append(save_nifti(labels, affine, pred_path) if nifti else save_h5(labels, pred_path, spacing=spacing))
        colours = palette or default_palette(max(len(classes), int(labels.max()) + 1))
        save_png(montage(volume, labels, colours, class_names=classes), osp.join(out_dir, f"{name}_montage.png"))
    return written
