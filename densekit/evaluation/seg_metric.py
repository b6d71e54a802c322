"""Semantic segmentation metrics with mmsegmentation 1.x ``IoUMetric`` semantics.

Per image, pixels labelled ``ignore_index`` are dropped and four per-class pixel counts are taken:
intersection (predicted = label = c), union, predicted area and label area. They are summed over the
dataset, and only then turned into ratios (so large images weigh more, as in mmseg):

- ``aAcc`` = sum(intersection) / sum(label area): pixel accuracy;
- per class ``IoU`` = intersection / union and ``Acc`` = intersection / label area;
- ``mIoU`` / ``mAcc`` = NaN-ignoring means over classes. A class absent from both predictions and
  labels has IoU 0/0 = NaN and does not count; a class predicted but never labelled has IoU 0.

Unlike mmseg, which reports percentages rounded to two decimals, densekit reports unrounded
**fractions in [0, 1]** (mmseg's ``mIoU: 47.25`` is densekit's ``mIoU: 0.4725``). Counts are int64, so
they stay exact on datasets of any size (mmseg accumulates float32 histograms).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..registry import METRICS
from ..visualization import plot_per_class_iou

ALLOWED_METRICS = ("mIoU", "mDice", "mFscore")


def intersect_and_union(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray, num_classes: int,
                        ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class pixel counts of one image: ``(area_intersect, area_union, area_pred_label, area_label)``,
    each an int64 CPU tensor ``(num_classes,)``.

    ``pred`` and ``label`` are label maps of the same shape (e.g. ``(H, W)`` or ``(1, H, W)``). Pixels
    whose label is ``ignore_index`` are dropped; values outside ``[0, num_classes)`` count in no class
    (like mmseg's ``torch.histc``), so a labelled pixel predicted as such a value only adds to
    ``area_label``.
    """
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape; "
                         "predictions must be at the label's (original image) size")
    keep = label != ignore_index
    pred, label = pred[keep].long(), label[keep].to(pred.device).long()

    def count(values: torch.Tensor) -> torch.Tensor:
        values = values[(values >= 0) & (values < num_classes)]
        return torch.bincount(values, minlength=num_classes).cpu()

    area_intersect = count(pred[pred == label])
    area_pred, area_label = count(pred), count(label)
    return area_intersect, area_pred + area_label - area_intersect, area_pred, area_label


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` as float64 with 0/0 = NaN, without warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(a, np.float64) / np.asarray(b, np.float64)


def total_area_to_metrics(total_area_intersect: np.ndarray | torch.Tensor, total_area_union: np.ndarray | torch.Tensor,
                          total_area_pred_label: np.ndarray | torch.Tensor,
                          total_area_label: np.ndarray | torch.Tensor, metrics: Sequence[str] = ("mIoU",),
                          nan_to_num: float | None = None, beta: float = 1.0) -> dict[str, np.ndarray | float]:
    """mmseg's ``total_area_to_metrics``: ``aAcc`` (a float) and per-class float64 arrays ``(K,)``:
    ``IoU`` and ``Acc`` (``'mIoU'``), ``Dice`` and ``Acc`` (``'mDice'``), ``Fscore``, ``Precision`` and
    ``Recall`` (``'mFscore'``, F-beta). Fractions in [0, 1]; 0/0 is NaN unless ``nan_to_num`` is given.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = set(metrics) - set(ALLOWED_METRICS)
    if unknown:
        raise KeyError(f"metrics {sorted(unknown)} are not supported; choose from {ALLOWED_METRICS}")
    inter, union, pred, label = (np.asarray(torch.as_tensor(x).cpu(), np.float64) for x in
                                 (total_area_intersect, total_area_union, total_area_pred_label, total_area_label))
    out: dict[str, np.ndarray | float] = {"aAcc": float(_divide(inter.sum(), label.sum()))}
    for metric in metrics:
        if metric == "mIoU":
            out["IoU"], out["Acc"] = _divide(inter, union), _divide(inter, label)
        elif metric == "mDice":
            out["Dice"], out["Acc"] = _divide(2 * inter, pred + label), _divide(inter, label)
        else:
            precision, recall = _divide(inter, pred), _divide(inter, label)
            out["Fscore"] = _divide((1 + beta**2) * precision * recall, beta**2 * precision + recall)
            out["Precision"], out["Recall"] = precision, recall
    if nan_to_num is not None:
        out = {k: (np.nan_to_num(v, nan=nan_to_num) if isinstance(v, np.ndarray) else
                   float(np.nan_to_num(v, nan=nan_to_num))) for k, v in out.items()}
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN when all are NaN (no warning)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def format_class_table(class_names: Sequence[str], columns: dict[str, np.ndarray]) -> str:
    """A plain-text table: one row per class, one column per metric (4 decimals, ``nan`` when absent)."""
    header = ["Class", *columns]
    rows = [[str(name), *(f"{columns[k][i]:.4f}" for k in columns)] for i, name in enumerate(class_names)]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: list[str]) -> str:
        first = f" {cells[0]:<{widths[0]}} "
        return "|" + "|".join([first, *(f" {c:>{w}} " for c, w in zip(cells[1:], widths[1:]))]) + "|"

    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


@METRICS.register_module()
class IoUMetric(BaseMetric):
    """mmseg's ``IoUMetric``: accumulates per-image ``intersect_and_union`` of ``pred_sem_seg`` against
    ``gt_sem_seg`` and returns ``aAcc``, ``mIoU`` and ``mAcc`` (plus ``mDice``, ``mFscore``,
    ``mPrecision``, ``mRecall`` when asked) as fractions in [0, 1], logging a per-class table.

    Args:
        ignore_index: label value excluded from every count.
        iou_metrics: any of ``'mIoU'``, ``'mDice'``, ``'mFscore'``.
        nan_to_num: replace NaN per-class values (classes absent from labels and predictions) by this
            number, so they do count in the means; None keeps mmseg's default of excluding them.
        beta: weight of recall in the F-score.
        per_class: also return each class's IoU as ``IoU.<class>`` (NaN classes left out), so the Runner logs
            it to ``vis_data/scalars.json`` and ``densekit plot`` draws the per-class bar chart.
        output_dir: write ``per_class_iou.png`` (``densekit.visualization.plot_per_class_iou``) there after
            each evaluation.
        collect_device, prefix: as in ``mmengine.evaluator.BaseMetric``.

    Class names come from ``dataset_meta['classes']`` (the Runner copies the dataset's ``metainfo``).
    Predictions must have the label's size; densekit's segmentors return them at the original size.
    """

    def __init__(self, ignore_index: int = 255, iou_metrics: Sequence[str] = ("mIoU",),
                 nan_to_num: float | None = None, beta: float = 1.0, per_class: bool = False,
                 output_dir: str | None = None, collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [iou_metrics] if isinstance(iou_metrics, str) else list(iou_metrics)
        unknown = set(self.metrics) - set(ALLOWED_METRICS)
        if unknown:
            raise KeyError(f"iou_metrics {sorted(unknown)} are not supported; choose from {ALLOWED_METRICS}")
        self.ignore_index = ignore_index
        self.nan_to_num = nan_to_num
        self.beta = beta
        self.per_class = per_class
        self.output_dir = output_dir

    def _classes(self) -> Sequence[str]:
        meta = self.dataset_meta or {}
        if not meta.get("classes"):
            raise ValueError("IoUMetric needs dataset_meta['classes']; the Runner sets it from the dataset's "
                             "metainfo, or set metric.dataset_meta = dict(classes=[...])")
        return meta["classes"]

    @staticmethod
    def _label_map(sample: dict | object, name: str) -> torch.Tensor:
        field = sample[name] if isinstance(sample, dict) else getattr(sample, name)
        return field["data"] if isinstance(field, dict) else field.data

    def process(self, data_batch: object, data_samples: Sequence[dict]) -> None:
        """Append the four per-class counts of each sample (dicts from the evaluator, or SegDataSample)."""
        num_classes = len(self._classes())
        for sample in data_samples:
            pred = self._label_map(sample, "pred_sem_seg").squeeze()
            label = self._label_map(sample, "gt_sem_seg").squeeze()
            self.results.append(intersect_and_union(pred, label, num_classes, self.ignore_index))

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the counts over all samples; return the summary and log the per-class table."""
        class_names = self._classes()
        totals = [torch.stack(column).sum(0) for column in zip(*results)] if results else \
            [torch.zeros(len(class_names), dtype=torch.int64)] * 4
        per_class = total_area_to_metrics(*totals, metrics=self.metrics, nan_to_num=self.nan_to_num, beta=self.beta)
        summary = {"aAcc": per_class.pop("aAcc")}
        for key, values in per_class.items():
            summary["m" + key] = _nanmean(values)
        print_log("per class results:\n" + format_class_table(class_names, per_class), logger="current")
        if "IoU" in per_class:
            ious = per_class["IoU"]
            if self.per_class:
                summary.update({f"IoU.{n}": float(v) for n, v in zip(class_names, ious) if not np.isnan(v)})
            if self.output_dir:
                palette = (self.dataset_meta or {}).get("palette")
                path = plot_per_class_iou(class_names, ious, f"{self.output_dir}/per_class_iou.png", palette)
                print_log(f"per-class IoU chart written to {path}", logger="current")
        return summary
