"""Slice-wise inference on 3-D volumes, and the volume branch of ``densekit infer``.

Volumes are ``(D, H, W)`` arrays whose slices ``volume[k]`` are what the 2-D model sees; they are read and
written by ``densekit.datasets.medical.io`` (NIfTI, Synapse ``.npy.h5``), their overlay montages drawn by
``densekit.visualization.montage``.

``infer_volume`` runs the slices in batches. ``resize='bilinear'``: each batch is resized to the model's input
size (bicubic), its logits are resized back to the slice size (bilinear) and reduced to labels at once, so at
most one batch of full-resolution per-class logits exists at a time (``batch_size x K x H x W`` floats).
``resize='zoom'``: the official Swin-Unet test's resizing (``scipy.ndimage.zoom`` order 3 in, argmax at the
model's size, order 0 of the labels out), computed exactly on the torch side by ``densekit.datasets.medical.zoom``.
"""
from __future__ import annotations

import os.path as osp
import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..datasets.medical.io import NIFTI_SUFFIXES, case_name, list_volumes, read_volume, save_h5, save_nifti
from ..datasets.medical.transforms import window_intensity
from ..datasets.medical.zoom import zoom_images, zoom_labels
from ..visualization import default_palette, montage, write_image

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


# -- the volume branch of tools/infer.py ------------------------------------------------------------------
def model_input_size(model: nn.Module, default: Sequence[int] = (224, 224)) -> tuple[int, int]:
    """The slice size the model was trained at: ``ResizeSlice.output_size`` of its config's test pipeline."""
    cfg = getattr(model, "cfg", None)
    dataset = (cfg.get("test_dataloader", {}) or {}).get("dataset", {}) if cfg is not None else {}
    for step in dataset.get("pipeline", []) or []:
        if step.get("type") == "ResizeSlice":
            return tuple(step.get("output_size", default))
    return tuple(default)


def _dataset_cfg(cfg, loader: str) -> dict:
    """The innermost dataset config of ``cfg[loader]`` (through wrappers such as ``RepeatDataset``)."""
    dataset = ((cfg.get(loader) or {}) if cfg is not None else {}).get("dataset") or {}
    while isinstance(dataset.get("dataset"), dict):
        dataset = dataset["dataset"]
    return dataset


def config_window(cfg) -> tuple[str | Sequence[float] | None, str | None, str]:
    """The intensity window a model was trained with, from its config: ``(window, window_mode, where)``.

    ``NiftiSliceDataset`` windows each volume on load with its ``window`` / ``window_mode`` (default ``'ct'``);
    the test dataset is read first, then the training one. Any other dataset (Synapse: CT stored windowed to
    [-125, 275] HU) means ``'ct'`` for NIfTI input, the window Synapse's preprocessing used.
    """
    for loader in ("test_dataloader", "val_dataloader", "train_dataloader"):
        dataset = _dataset_cfg(cfg, loader)
        if dataset.get("type") == "NiftiSliceDataset":
            window = dataset.get("window", "ct")
            window = list(window) if isinstance(window, (list, tuple)) else window
            return window, dataset.get("window_mode"), f"the window of the config's {loader}.dataset"
    kinds = sorted({_dataset_cfg(cfg, name).get("type", "?") for name in ("test_dataloader", "train_dataloader")})
    return "ct", None, f"the config's dataset ({', '.join(kinds)}) is not NIfTI: CT, as Synapse is preprocessed"


def _window_name(window, window_mode: str | None) -> str:
    if window is None or isinstance(window, str):
        return str(window if window is not None else "none")
    return f"{list(window)}" + (f" ({window_mode})" if window_mode else "")


def segment_volume_files(model: nn.Module, inputs: Sequence[str], out_dir: str, window: str | None = "auto",
                         batch_size: int = 16, palette: Sequence[Sequence[int]] | None = None,
                         resize: str = "bilinear", on_error: str = "stop") -> list[str]:
    """Segment every volume in ``inputs`` (files or folders of ``.nii``/``.nii.gz``/``.npy.h5``); no labels needed.

    Per volume: ``<name>_pred.nii.gz`` (NIfTI input, the source affine) or ``<name>_pred.h5`` (h5 input), and
    ``<name>_montage.png`` (overlays of 16 slices). ``window='auto'`` windows NIfTI intensities as the model was
    trained (``config_window`` of ``model.cfg``: its dataset's ``window``, e.g. ``'mr'``) and leaves h5 volumes as
    stored (Synapse h5 are windowed already); ``'ct'``, ``'mr'`` or None force a choice. The window used is
    printed (``window: mr (...)``). ``resize``: as in ``infer_volume``. A volume that cannot be read stops the
    run (``on_error='stop'``) or is skipped with a warning (``'skip'``). Returns the prediction paths.
    """
    paths = [p for item in inputs for p in list_volumes(str(item))]
    size = model_input_size(model)
    classes = (getattr(model, "dataset_meta", None) or {}).get("classes", [])
    written, said, skipped = [], set(), []
    for path in paths:
        try:
            volume, spacing, affine = read_volume(path)
        except (OSError, ValueError, EOFError) as error:
            if on_error == "stop":
                raise FileNotFoundError(f"cannot read volume {path}: {error}") from error
            skipped.append(f"{osp.basename(path)} ({error})")
            continue
        nifti = path.endswith(NIFTI_SUFFIXES)
        chosen, mode, where = (None, None, "h5 volumes are stored windowed") if not nifti else (
            config_window(getattr(model, "cfg", None)) if window == "auto" else (window, None, "--window"))
        if (_window_name(chosen, mode), where) not in said:
            said.add((_window_name(chosen, mode), where))
            print(f"window: {_window_name(chosen, mode)} ({where})")
        if chosen is not None:
            volume = window_intensity(volume, chosen, mode)
        name = case_name(path)
        labels = infer_volume(model, volume, batch_size=batch_size, input_size=size, desc=name, resize=resize)
        pred_path = osp.join(out_dir, f"{name}_pred" + (".nii.gz" if nifti else ".h5"))
        written.append(save_nifti(labels, affine, pred_path) if nifti else save_h5(labels, pred_path, spacing=spacing))
        colours = palette or default_palette(max(len(classes), int(labels.max()) + 1))
        picture = montage(volume, labels, colours, class_names=classes)
        write_image(osp.join(out_dir, f"{name}_montage.png"), picture[..., ::-1])  # the montage is RGB
    if skipped:
        print(f"warning: skipped {len(skipped)} of {len(paths)} volumes that could not be read: {'; '.join(skipped)}",
              file=sys.stderr)
    return written
