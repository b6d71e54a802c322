"""``scipy.ndimage.zoom`` of a batch of slices as torch operations, with scipy's exact results.

The official Swin-Unet test (``test_single_volume``) resizes each CT slice with ``zoom(order=3)`` (cubic
B-spline, ``grid_mode=False``) before the model and the argmaxed labels back with ``zoom(order=0)``. Both are
separable along the two axes and, for a fixed pair of sizes, fixed maps: order 3 is linear (spline prefilter
then interpolation), so ``zoom(x) = A_h @ x @ A_w.T`` with ``A = zoom_matrix(n_in, n_out)``; order 0 picks one
source pixel per output pixel, so ``zoom(labels) = labels[idx_h][:, idx_w]`` with ``idx = zoom_index(...)``.
We do not re-implement scipy's spline code: the maps are read off scipy itself, by zooming the unit vectors
(order 3) and ``arange(n_in)`` (order 0) once per size pair, then applied to whole batches on the torch side
(one matmul pair per batch instead of one scipy call per slice, on any device).
``tests/datasets/medical/test_zoom.py`` checks both against ``scipy.ndimage.zoom`` of 2-D slices.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import ndimage


@functools.lru_cache(maxsize=16)
def zoom_matrix(n_in: int, n_out: int, order: int = 3) -> np.ndarray:
    """``(n_out, n_in)`` float64: the linear map ``scipy.ndimage.zoom(v, n_out / n_in, order=order)`` applies
    to a 1-D ``v`` of length ``n_in`` (column ``j`` = the zoom of the ``j``-th unit vector)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"zoom sizes must be >= 1, got {n_in} -> {n_out}")
    columns = [ndimage.zoom(unit, n_out / n_in, order=order) for unit in np.eye(n_in)]
    matrix = np.stack(columns, axis=1)
    if matrix.shape != (n_out, n_in):  # scipy rounds the output length; the factor must give n_out back
        raise ValueError(f"zoom by {n_out}/{n_in} gives {matrix.shape[0]} samples, not {n_out}")
    return matrix


@functools.lru_cache(maxsize=16)
def zoom_index(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out,)`` int64: the source index ``scipy.ndimage.zoom(labels, n_out / n_in, order=0)`` reads for
    each output position along one axis."""
    index = np.rint(ndimage.zoom(np.arange(n_in, dtype=np.float64), n_out / n_in, order=0)).astype(np.int64)
    if index.shape != (n_out,):
        raise ValueError(f"zoom by {n_out}/{n_in} gives {index.shape[0]} samples, not {n_out}")
    return index


def zoom_images(x: torch.Tensor, size: tuple[int, int], order: int = 3) -> torch.Tensor:
    """``(..., H, W)`` float -> ``(..., size[0], size[1])``: ``scipy.ndimage.zoom(slice, (size[0] / H,
    size[1] / W), order=order)`` of every slice, as two matmuls in ``x``'s dtype and device (also under
    autocast)."""
    h, w = x.shape[-2:]
    out_h, out_w = size
    rows = torch.as_tensor(zoom_matrix(h, out_h, order), dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(zoom_matrix(w, out_w, order), dtype=x.dtype, device=x.device)
    with torch.autocast(x.device.type, enabled=False):  # a resize, not model compute: keep x's precision
        return rows @ x @ cols.T


def zoom_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., h, w)`` integer labels -> ``(..., size[0], size[1])``: ``scipy.ndimage.zoom(labels, ...,
    order=0)`` of every slice, as one gather per axis."""
    h, w = labels.shape[-2:]
    rows = torch.as_tensor(zoom_index(h, size[0]), device=labels.device)
    cols = torch.as_tensor(zoom_index(w, size[1]), device=labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)
