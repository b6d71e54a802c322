"""Pictures people look at: colour overlays of label maps, proposals drawn on images, comparison panels,
training curves and montages of volume slices, written atomically."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .fileio import save_atomically


def default_palette(num_classes: int, seed: int = 42) -> list[list[int]]:
    """RGB colours ``(num_classes, 3)`` for classes without a palette: mmseg's rule for datasets that define
    none, ``RandomState(42).randint(0, 255, (K, 3))``, so densekit's and mmseg's pictures agree.

    A private generator, so the global numpy random state (seeded by mmengine) is left untouched.
    """
    rng = np.random.RandomState(seed)
    return rng.randint(0, 255, size=(num_classes, 3)).tolist()


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` BGR colours (ignored pixels black)."""
    lut = np.zeros((256, 3), np.uint8)
    colors = np.asarray(palette, np.uint8)[:, ::-1]  # palettes are RGB, OpenCV writes BGR
    lut[: len(colors)] = colors[:256]
    lut[ignore_index] = 0
    return lut[label.astype(np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised ``label`` ``(H, W)`` over a BGR ``image`` ``(H, W, 3)``."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    return cv2.addWeighted(image, 1 - alpha, colorize(label, palette), alpha, 0)


def draw_proposals(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, top_k: int = 20,
                   gt_boxes: np.ndarray | None = None) -> np.ndarray:
    """The ``top_k`` highest-scoring ``boxes`` ``(N, 4)`` xyxy (image pixels) over a BGR ``image``, coloured
    by ``scores`` ``(N,)`` (turbo colormap: red high, blue low), each labelled with its rank and score;
    ``gt_boxes`` ``(M, 4)``, if given, drawn first in thin white. Returns a new ``(H, W, 3)`` image."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(scores):
        raise ValueError(f"expected boxes (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}")
    canvas = image.copy()
    for x1, y1, x2, y2 in (gt_boxes if gt_boxes is not None else np.zeros((0, 4))).round().astype(int):
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), 1, cv2.LINE_AA)
    order = np.argsort(-scores, kind="stable")[:top_k]
    colors = cv2.applyColorMap(np.clip(scores[order] * 255, 0, 255).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)
    for rank in reversed(range(len(order))):  # the best box is drawn last, on top
        x1, y1, x2, y2 = boxes[order[rank]].round().astype(int)
        color = tuple(int(c) for c in colors[rank, 0])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 2, cv2.LINE_AA)
        cv2.putText(canvas, f"{rank + 1}:{scores[order[rank]]:.2f}", (x1 + 2, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return canvas


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """``cv2.imwrite`` of a BGR ``image`` ``(H, W, 3)`` (format from ``path``'s extension) through a temporary
    file and a rename, so a crash never leaves half a PNG. Returns ``path``."""
    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, image):
            raise OSError(f"could not write image {path}")

    return save_atomically(path, write)


# ------------------------------------------------------------------------------- panels and curves
def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` with a dark strip on top holding ``text``."""
    strip = np.full((22, tile.shape[1], 3), 32, np.uint8)
    cv2.putText(strip, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


def legend(class_names: Sequence[str], palette: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """A BGR strip ``(rows * 22, width, 3)`` with one colour swatch and name per class."""
    cell = 150
    per_row = max(1, width // cell)
    rows = -(-len(class_names) // per_row)
    strip = np.full((rows * 22, width, 3), 255, np.uint8)
    for i, (name, rgb) in enumerate(zip(class_names, palette)):
        x, y = (i % per_row) * cell + 6, (i // per_row) * 22 + 4
        cv2.rectangle(strip, (x, y), (x + 14, y + 14), tuple(int(c) for c in rgb[::-1]), -1)
        cv2.putText(strip, str(name), (x + 20, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def labelled_overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]],
                     class_names: Sequence[str] = (), alpha: float = 0.5) -> np.ndarray:
    """``overlay`` with a legend strip below naming the classes present in ``label`` in their colours
    (ids without a name are listed as ``class <id>``). Returns BGR uint8 ``(H [+ legend], W, 3)``."""
    picture = overlay(image, label, palette, alpha)
    present = [int(k) for k in np.unique(label) if k != 255 and k < len(palette)]
    if not present:
        return picture
    names = [class_names[k] if k < len(class_names) else f"class {k}" for k in present]
    return np.concatenate([picture, legend(names, [palette[k] for k in present], picture.shape[1])], axis=0)


def comparison_panel(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, palette: Sequence[Sequence[int]],
                     class_names: Sequence[str] = (), alpha: float = 0.6) -> np.ndarray:
    """``image | ground truth | prediction`` side by side, labels in class colours, plus a legend.

    Args:
        image: BGR uint8 ``(H, W, 3)``.
        gt: class ids ``(H, W)`` (255 = ignored, drawn black) or None.
        pred: class ids ``(H, W)``.
        palette: RGB colour per class.
        class_names: names for the legend; none drawn when empty.

    Returns:
        BGR uint8 ``(22 + H [+ legend], 2W or 3W, 3)``.
    """
    tiles = [_caption(image, "image")]
    if gt is not None:
        tiles.append(_caption(overlay(image, gt, palette, alpha), "ground truth"))
    tiles.append(_caption(overlay(image, pred, palette, alpha), "prediction"))
    panel = np.concatenate(tiles, axis=1)
    if class_names:
        panel = np.concatenate([panel, legend(class_names, palette, panel.shape[1])], axis=0)
    return panel


def panels_with_legend(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray,
                       palette: Sequence[Sequence[int]], class_names: Sequence[str] = (),
                       alpha: float = 0.5) -> np.ndarray:
    """``comparison_panel`` whose legend lists only the classes in ``gt`` or ``pred`` (ids without a name as
    ``class <id>``). BGR uint8 ``(22 + H [+ legend], 2W or 3W, 3)``."""
    panel = comparison_panel(image, gt, pred, palette, (), alpha)
    shown = set(np.unique(pred).tolist()) | (set(np.unique(gt).tolist()) if gt is not None else set())
    present = sorted(k for k in shown if k != 255 and k < len(palette))
    if not present:
        return panel
    names = [class_names[k] if k < len(class_names) else f"class {k}" for k in present]
    return np.concatenate([panel, legend(names, [palette[k] for k in present], panel.shape[1])], axis=0)


# Keys mmengine logs beside losses and metrics; never plotted as curves.
BOOKKEEPING_KEYS = frozenset({"step", "iter", "epoch", "time", "data_time", "memory", "lr", "base_lr"})


def read_scalars(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """mmengine's ``vis_data/scalars.json`` (one JSON object per line) -> ``(train rows, val rows)``.

    Train rows carry ``loss`` and ``step`` (the iteration); validation rows carry the metrics
    (``mIoU``, ``aAcc``, ...) and ``step`` (the iteration they were measured after): any row without ``loss``
    holding a key besides ``BOOKKEEPING_KEYS``.
    """
    import json

    train, val = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "loss" in row:
                train.append(row)
            elif set(row) - BOOKKEEPING_KEYS:
                val.append(row)
    return train, val


def plot_training_curves(scalars: str | os.PathLike, out: str | os.PathLike, metric: str = "mIoU",
                         target: float | None = None, title: str = "") -> Path:
    """Plot training loss and validation ``metric`` against iterations from a ``scalars.json``; write a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, no display needed). ``target`` draws a dashed
    line on the metric axis. Returns ``out``.
    """
    train, val = read_scalars(scalars)
    if not train:
        raise ValueError(f"{scalars} holds no training loss: was the run logged with a LoggerHook?")
    fig = _figure(10, 4)
    ax_loss, ax_metric = fig.subplots(1, 2)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="total")
    for key, color in (("decode.loss_ce", "tab:orange"), ("aux.loss_ce", "tab:green")):
        if key in train[0]:
            ax_loss.plot([r["step"] for r in train], [r[key] for r in train], color=color, lw=1, label=key)
    last_step = max(r["step"] for r in train + val)
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss", xlim=(0, last_step))
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    rows = [r for r in val if metric in r]
    if rows:
        steps, values = [r["step"] for r in rows], [r[metric] for r in rows]
        ax_metric.plot(steps, values, "o-", color="tab:red", label=f"validation {metric}")
        ax_metric.annotate(f"{values[-1]:.3f}", (steps[-1], values[-1]), textcoords="offset points",
                           xytext=(-8, -16), ha="right")
    if target is not None:
        ax_metric.axhline(target, ls="--", color="gray", label=f"target {target:g}")
    ax_metric.set(xlabel="iteration", ylabel=metric, title=f"validation {metric}", ylim=(0, 1))
    ax_metric.set_xlim(0, last_step)
    ax_metric.legend(loc="lower right")
    ax_metric.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig, out: str | os.PathLike) -> Path:
    """Write a matplotlib ``Figure`` as PNG through a temporary file and a rename; returns ``out``."""
    return save_atomically(out, lambda tmp: fig.savefig(tmp, format="png"))


def _figure(width: float, height: float):
    """A matplotlib ``Figure`` on an Agg canvas: no pyplot, no display, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def loss_and_metric_keys(train: Sequence[dict], val: Sequence[dict]) -> tuple[list[str], list[str]]:
    """The loss terms (train keys holding ``loss``, total first) and the scalar metrics (validation keys but
    bookkeeping and per-class ``IoU.<class>`` values) of a run, in first-seen order."""
    losses = list(dict.fromkeys(k for row in train for k in row if "loss" in k))
    losses.sort(key=lambda k: k != "loss")
    metrics = list(dict.fromkeys(k for row in val for k, v in row.items()
                                 if k not in BOOKKEEPING_KEYS and "." not in k and isinstance(v, (int, float))))
    return losses, metrics


def plot_curves(scalars: str | os.PathLike, out: str | os.PathLike, title: str = "", cols: int = 3) -> Path:
    """One subplot per loss term and per validation metric of a ``scalars.json``, x = iteration; writes a PNG.

    Loss curves are drawn from the training rows, metrics (``aAcc``, ``mIoU``, ``mDice``, ``AR@100``, ...) as
    dots-and-lines from the validation rows with the last value written on. Returns ``out``.
    """
    train, val = read_scalars(scalars)
    losses, metrics = loss_and_metric_keys(train, val)
    if not losses and not metrics:
        raise ValueError(f"{scalars} holds neither losses nor metrics: was the run logged with a LoggerHook?")
    keys = losses + metrics
    cols = min(cols, len(keys))
    rows = -(-len(keys) // cols)
    fig = _figure(4 * cols, 3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys):
        points = [(r["step"], r[key]) for r in (train if key in losses else val) if key in r]
        steps, values = zip(*points)
        if key in losses:
            ax.plot(steps, values, color="tab:blue", lw=1)
        else:
            ax.plot(steps, values, "o-", color="tab:red", ms=3)
        ax.annotate(f"{values[-1]:.4g}", (steps[-1], values[-1]), textcoords="offset points", xytext=(-4, 6),
                    ha="right", fontsize=8)
        # mmengine logs validation at the iteration (iteration-based loops) or the epoch (epoch-based ones)
        ax.set(xlabel="iteration" if key in losses else "step (iteration or epoch)", title=key,
               ylabel="loss" if key in losses else key)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def per_class_iou(row: dict) -> tuple[list[str], np.ndarray]:
    """Class names and IoUs from a validation row's ``IoU.<class>`` keys (``IoUMetric(per_class=True)``)."""
    names = [k[len("IoU."):] for k in row if k.startswith("IoU.")]
    return names, np.asarray([row[f"IoU.{n}"] for n in names], np.float64)


def plot_per_class_iou(class_names: Sequence[str], ious: Sequence[float], out: str | os.PathLike,
                       palette: Sequence[Sequence[int]] | None = None, title: str = "") -> Path:
    """Per-class IoU as a horizontal bar chart, one bar per class in its palette colour (RGB), the value written
    at the bar's end; NaN (a class absent from labels and predictions) is drawn as "absent". The figure grows
    with the number of classes (0.22 inch per class). Returns ``out``."""
    ious = np.asarray(ious, np.float64)
    if len(class_names) != len(ious):
        raise ValueError(f"{len(class_names)} class names but {len(ious)} IoU values")
    palette = palette if palette is not None else default_palette(len(ious))
    colors = [np.asarray(palette[i % len(palette)], np.float64) / 255 for i in range(len(ious))]
    fig = _figure(7, 1.2 + 0.22 * len(ious))
    ax = fig.subplots()
    positions = np.arange(len(ious))[::-1]  # first class on top
    ax.barh(positions, np.nan_to_num(ious), color=colors, edgecolor="black", linewidth=0.4)
    for y, value in zip(positions, ious):
        text = "absent" if np.isnan(value) else f"{value:.3f}"
        ax.text(min(np.nan_to_num(value), 1.0) + 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(positions, [str(n) for n in class_names], fontsize=8)
    valid = ious[~np.isnan(ious)]
    mean = f"  (mIoU {valid.mean():.3f})" if valid.size else ""
    ax.set(xlim=(0, 1.12), ylim=(-0.7, len(ious) - 0.3), xlabel="IoU", ylabel="class",
           title=(title or "per-class IoU") + mean)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet",
                    marker: tuple[int, int] | None = None) -> np.ndarray:
    """Blend ``heat`` ``(H, W)`` (scaled by its maximum to [0, 1], coloured by matplotlib's ``cmap``) over a BGR
    ``image`` ``(H, W, 3)``; ``marker`` ``(x, y)`` draws a white cross there (a query pixel). Returns BGR uint8."""
    from matplotlib import colormaps

    if image.shape[:2] != heat.shape:
        raise ValueError(f"image {image.shape[:2]} and heat map {heat.shape} differ in size")
    peak = float(np.max(heat)) if heat.size else 0.0
    scaled = np.asarray(heat, np.float64) / peak if peak > 0 else np.zeros(heat.shape)
    colored = (colormaps[cmap](scaled)[..., :3][..., ::-1] * 255).astype(np.uint8)  # RGBA -> BGR
    blended = cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha, colored, alpha, 0)
    if marker is not None:
        cv2.drawMarker(blended, tuple(int(v) for v in marker), (255, 255, 255), cv2.MARKER_CROSS,
                       max(7, min(image.shape[:2]) // 12), 2)
    return blended


# ------------------------------------------------------------------------------- volume montages
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
    """An RGB uint8 grid ``(rows * (14 + h), cols * w, 3)`` of ``n`` slices with the labels overlaid.

    Slices are picked by ``montage_slices``; intensities are stretched between the volume's 0.5th and 99.5th
    percentiles; labels ``> 0`` are blended with ``palette[label]`` (RGB) at ``alpha``; each tile is marked
    with its slice index in a 14-pixel strip above it. ``tile_size`` scales tiles to that longer side. Empty cells
    of the grid are black. ``class_names`` (index 0 = background, not drawn) adds a legend under the grid of the
    classes 1.. that ``labels`` holds.
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
        tiles.append(_slice_caption(tile, int(k)))
    cols = cols or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    present = [] if labels is None else [int(k) for k in np.unique(labels) if 0 < k < len(palette)]
    if len(class_names) > 1 and present:
        names = [class_names[k] if k < len(class_names) else f"class {k}" for k in present]
        strip = legend(names, [list(palette[k]) for k in present], grid.shape[1])[..., ::-1]  # BGR->RGB
        grid = np.concatenate([grid, strip], axis=0)
    return grid


def _slice_caption(tile: np.ndarray, index: int) -> np.ndarray:
    """``tile`` with a black strip above holding the slice number: written beside the image, not over it, so it
    never hides the labels of a small tile."""
    strip = np.zeros((14, tile.shape[1], 3), np.uint8)
    cv2.putText(strip, str(index), (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)
