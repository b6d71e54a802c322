"""Sliding-window segmentation of images of any size in bounded memory: tiles streamed, labels finalised per band.

``BaseSegmentor.slide_inference`` (the reference, mmseg's definition) holds the whole normalised image and a
full-resolution float map per class: ``4 * (3 + K + 1) * H * W`` bytes, ~4.7 GB for 6 classes at 12000x9000,
before ``predict`` resizes and copies it. ``stream_slide_labels`` runs the same tile grid in the same order and
adds the same logits, but keeps only the uint8 image, the uint8 labels and one band of tile rows of per-class
sums: rows that no later tile touches are divided by their counts, reduced to labels and dropped at once. The
labels equal the reference's (``tests/inference/test_tiled.py``); peak memory is about
``H * W * (3 + 1)`` bytes plus ``4 * (K + 1) * crop_h * W`` bytes for the band and one batch of tiles through
the network.

Only pipelines that feed the image at its own size stream (load, annotations, pack: the demo's and most
remote-sensing configs); ``streamable`` says why a pipeline is not.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.losses import predict_labels

# Pipeline steps that leave the image at its stored size (anything else, e.g. Resize, changes what the model sees).
SAME_SIZE_STEPS = ("LoadImageFromFile", "LoadAnnotations", "PackSegInputs")
# Above this many pixels ``densekit infer`` streams tiles unless told otherwise: at 6 classes the reference path
# would hold ~40 bytes per pixel (float image, per-class map, count), ~170 MB here and 4.7 GB at 12000x9000.
AUTO_SLIDE_PIXELS = 2048 * 2048
AUTO_CROP = (512, 512)
AUTO_STRIDE = (384, 384)  # a quarter overlap: tile borders, where context is cut, are averaged with a neighbour


def streamable(pipeline: Sequence[dict]) -> str | None:
    """Why a test pipeline cannot stream (a step that resizes or otherwise reshapes the image), or None."""
    other = [step.get("type") for step in pipeline if step.get("type") not in SAME_SIZE_STEPS]
    if other:
        return (f"the test pipeline has {other}, which change the image before the model sees it; streamed "
                f"sliding windows run the image at its own size (steps allowed: {', '.join(SAME_SIZE_STEPS)})")
    return None


def tile_rows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[list[tuple[int, ...]]]:
    """mmseg's sliding-window grid, one list per tile row: ``(y1, y2, x1, x2)`` windows of ``crop`` every
    ``stride``, the last row / column moved back to end at the border (clipped to the image where it is smaller)."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    rows = []
    for h_idx in range(h_grids):
        y2 = min(h_idx * h_stride + h_crop, height)
        y1 = max(y2 - h_crop, 0)
        row = []
        for w_idx in range(w_grids):
            x2 = min(w_idx * w_stride + w_crop, width)
            row.append((y1, y2, max(x2 - w_crop, 0), x2))
        rows.append(row)
    return rows


def _batches(row: list[tuple[int, ...]], batch_size: int) -> Iterator[list[tuple[int, ...]]]:
    for start in range(0, len(row), batch_size):
        yield row[start:start + batch_size]


def _tile_inputs(model: nn.Module, image: np.ndarray, windows: list[tuple[int, ...]],
                 device: torch.device) -> torch.Tensor:
    """Normalised ``(B, C, h, w)`` tiles of the uint8 ``(H, W, C)`` image; the parts of a window past the image
    (the preprocessor's right/bottom ``size_divisor`` padding) are ``pad_val``, as in the padded whole input."""
    pre = model.data_preprocessor
    tiles = []
    for y1, y2, x1, x2 in windows:
        part = np.ascontiguousarray(image[y1:min(y2, image.shape[0]), x1:min(x2, image.shape[1])])
        tile = pre.normalize(torch.from_numpy(part).to(device).permute(2, 0, 1))
        pad = (0, (x2 - x1) - tile.shape[-1], 0, (y2 - y1) - tile.shape[-2])
        tiles.append(F.pad(tile, pad, value=getattr(pre, "pad_val", 0.0)) if any(pad) else tile)
    return torch.stack(tiles)


def padded_size(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The test-time input size the data preprocessor gives an ``height x width`` image (``size_divisor``)."""
    divisor = getattr(model.data_preprocessor, "size_divisor", None)
    if not divisor:
        return height, width
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


@torch.inference_mode()
def stream_slide_labels(model: nn.Module, image: np.ndarray, crop: Sequence[int], stride: Sequence[int],
                        batch_size: int = 1, progress: bool = True, desc: str | None = None) -> np.ndarray:
    """Labels ``(H, W)`` (uint8; int16 beyond 256 classes) of an ``(H, W, C)`` uint8 image (BGR, as OpenCV reads
    it) by sliding ``crop`` windows every ``stride`` pixels, in bounded memory (module docstring).

    Equal to ``model.predict`` under ``test_cfg=dict(mode='slide', crop_size=crop, stride=stride)`` for a
    pipeline that keeps the image size: the same windows over the same (padded) normalised input, the same
    ``encode_decode`` logits summed in the same order, divided by the same counts, the same arg-max.
    ``batch_size`` tiles of a row go through the network together; a tqdm bar counts tiles.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    if min(*crop, *stride) < 1:
        raise ValueError(f"crop and stride must be positive, got crop={tuple(crop)} stride={tuple(stride)}")
    height, width = image.shape[:2]
    padded = padded_size(model, height, width)
    rows = tile_rows(*padded, crop, stride)
    device = next(model.parameters()).device
    num_classes = int(model.num_classes)
    labels = np.empty((height, width), np.uint8 if num_classes <= 256 else np.int16)
    # The band: per-class sums and window counts of padded rows [top, top + band rows), full padded width.
    top, sums, counts = 0, None, None
    with tqdm(total=sum(map(len, rows)), desc=desc or "tiles", unit="tile", disable=not progress,
              leave=False) as bar:
        for index, row in enumerate(rows):
            y2 = row[0][1]
            grow = y2 - top - (0 if sums is None else sums.shape[1])
            if grow > 0:
                sums = _grow(sums, num_classes, grow, padded[1], device)
                counts = _grow(counts, 1, grow, padded[1], device)
            for windows in _batches(row, batch_size):
                logits = model.encode_decode(_tile_inputs(model, image, windows, device))
                for (y1, y2, x1, x2), logit in zip(windows, logits):
                    sums[:, y1 - top:y2 - top, x1:x2] += logit
                    counts[:, y1 - top:y2 - top, x1:x2] += 1
                bar.update(len(windows))
            done = rows[index + 1][0][0] if index + 1 < len(rows) else top + sums.shape[1]
            _finalise(labels, sums[:, :done - top], counts[:, :done - top], top)
            sums, counts, top = sums[:, done - top:].clone(), counts[:, done - top:].clone(), done
    return labels


def _grow(band: torch.Tensor | None, channels: int, rows: int, width: int, device: torch.device) -> torch.Tensor:
    """``band`` ``(C, n, W)`` with ``rows`` zero rows appended below (a new tile row reaches further down)."""
    new = torch.zeros((channels, rows, width), device=device)
    return new if band is None else torch.cat([band, new], dim=1)


def _finalise(labels: np.ndarray, sums: torch.Tensor, counts: torch.Tensor, top: int) -> None:
    """Rows ``top .. top + n`` of ``labels`` from a finished band ``(K, n, Wp)``: mean logits, arg-max, cropped to
    the image (rows and columns of the preprocessor's padding dropped)."""
    rows = min(sums.shape[1], labels.shape[0] - top)
    if rows <= 0:
        return
    mean = sums[:, :rows, :labels.shape[1]] / counts[:, :rows, :labels.shape[1]]
    labels[top:top + rows] = predict_labels(mean[None])[0].cpu().numpy()
