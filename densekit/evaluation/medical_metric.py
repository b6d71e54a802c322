"""Per-class, per-case Dice (DSC) and 95th-percentile Hausdorff distance (HD95) of 3-D segmentations.

``dice`` and ``hd95`` equal medpy's ``metric.binary.dc`` and ``metric.binary.hd95(result, reference,
voxelspacing, connectivity=1)``: the surface of a mask is the mask minus its erosion by the
``generate_binary_structure(ndim, 1)`` cross (voxels on the array border count as surface), surface
distances come from ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``, and HD95 is
``np.percentile`` (linear) of both directed distance sets together. The distance transform runs on the
bounding box of both masks plus one voxel, which gives the same distances much faster on whole volumes.

Two protocols decide what a case scores for one class (prediction ``P``, reference ``G``):

``'densekit'`` (default): HD95 in millimetres (the voxel spacing, ``(D, H, W)``).

    =================  ==========  =========  =====================================================
    case               DSC         HD95       why
    =================  ==========  =========  =====================================================
    P, G non-empty     2|P∩G|/...  HD95 (mm)
    P and G empty      NaN         NaN        the structure is absent and was not predicted: the case
                                              says nothing about this class and is left out of the
                                              class means (rather than a free DSC 1 / HD95 0)
    one of them empty  0           inf        no overlap; the distance to an empty set is infinite,
                                              so a missed or hallucinated organ cannot hide in a mean
                                              (the class mean HD95 becomes inf; per-case rows show why)
    =================  ==========  =========  =====================================================

    Class means are NaN-ignoring means over cases; the overall ``mDSC`` / ``mHD95`` are NaN-ignoring
    means over classes (background excluded).

``'swin-unet'``: the official ``calculate_metric_percase`` of TransUNet / Swin-Unet, for comparing with
published tables: HD95 in voxels (no spacing); ``P`` and ``G`` non-empty -> (DSC, HD95); ``P`` non-empty and
``G`` empty -> (1, 0); otherwise (``P`` empty) -> (0, 0). Means are plain means over cases, then classes.
"""
from __future__ import annotations

import csv
import logging
import math
import os.path as osp
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from ..datasets.medical.io import save_nifti, spacing_affine
from ..fileio import save_atomically
from ..registry import METRICS

PROTOCOLS = ("densekit", "swin-unet")


# -- binary metrics -----------------------------------------------------------------------------------------
def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """``2 |P ∩ G| / (|P| + |G|)`` of two masks (non-zero = object); 1.0 when both are empty (as medpy)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    return 2.0 * int(np.count_nonzero(pred & ref)) / total if total else 1.0


def _crop_box(*masks: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the union of ``masks`` grown by one voxel (clipped to the array)."""
    union = np.logical_or.reduce(masks)
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    return tuple(box)


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
                      connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every surface voxel of ``pred`` to the surface of ``ref``, and back (medpy's
    ``__surface_distances`` both ways). Both masks must be non-empty."""
    pred, ref = np.atleast_1d(np.asarray(pred, bool)), np.atleast_1d(np.asarray(ref, bool))
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    if spacing is not None:
        spacing = np.broadcast_to(np.asarray(spacing, np.float64), (pred.ndim,)).copy()
    box = _crop_box(pred, ref)
    pred, ref = pred[box], ref[box]
    structure = generate_binary_structure(pred.ndim, connectivity)
    pred_border, ref_border = _surface(pred, structure), _surface(ref, structure)
    to_ref = distance_transform_edt(~ref_border, sampling=spacing)[pred_border]
    to_pred = distance_transform_edt(~pred_border, sampling=spacing)[ref_border]
    return to_ref, to_pred


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
         connectivity: int = 1) -> float:
    """95th percentile of the symmetric surface distances (medpy's ``hd95``), in the unit of ``spacing``."""
    to_ref, to_pred = surface_distances(pred, ref, spacing, connectivity)
    return float(np.percentile(np.hstack((to_ref, to_pred)), 95))


def case_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
                 protocol: str = "densekit") -> tuple[float, float]:
    """``(DSC, HD95)`` of one class in one case under ``protocol`` (see the module docstring).
    ``spacing`` (``(D, H, W)`` mm) is used by ``'densekit'`` only; the official protocol measures voxels."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    pred, ref = np.asarray(pred) > 0, np.asarray(ref) > 0
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if protocol == "swin-unet":
        if has_pred and has_ref:
            return dice(pred, ref), hd95(pred, ref)
        if has_pred:
            return 1.0, 0.0
        return 0.0, 0.0
    if has_pred and has_ref:
        return dice(pred, ref), hd95(pred, ref, spacing)
    if not has_pred and not has_ref:
        return math.nan, math.nan
    return 0.0, math.inf


def volume_metrics(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None,
                   protocol: str = "densekit") -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(DSC, HD95)`` arrays ``(num_classes - 1,)`` of one labelled volume, classes ``1..K-1``."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    scores = [case_metrics(pred == c, ref == c, spacing, protocol) for c in range(1, num_classes)]
    return np.array([s[0] for s in scores], np.float64), np.array([s[1] for s in scores], np.float64)


# -- tables -------------------------------------------------------------------------------------------------
def _mean(values: np.ndarray, protocol: str) -> float:
    values = np.asarray(values, np.float64)
    if protocol == "swin-unet":
        return float(values.mean()) if values.size else math.nan
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def summarize(rows: Sequence[dict], class_names: Sequence[str], protocol: str) -> dict:
    """Class means ``{'DSC': (K-1,), 'HD95': (K-1,)}`` and overall ``mDSC`` / ``mHD95`` of per-case rows."""
    dsc = np.array([r["dsc"] for r in rows], np.float64).reshape(len(rows), len(class_names))
    hd = np.array([r["hd95"] for r in rows], np.float64).reshape(len(rows), len(class_names))
    class_dsc = np.array([_mean(dsc[:, j], protocol) for j in range(len(class_names))])
    class_hd = np.array([_mean(hd[:, j], protocol) for j in range(len(class_names))])
    return dict(DSC=class_dsc, HD95=class_hd, mDSC=_mean(class_dsc, protocol), mHD95=_mean(class_hd, protocol))


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.4f}")


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table; floats with 4 decimals."""
    cells = [[str(h) for h in header]] + [[_fmt(v) if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(r: list[str]) -> str:
        return "|" + "|".join([f" {r[0]:<{widths[0]}} ", *(f" {c:>{w}} " for c, w in zip(r[1:], widths[1:]))]) + "|"

    return "\n".join([rule, line(cells[0]), rule, *(line(r) for r in cells[1:]), rule])


def write_csv_atomic(path: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a CSV through a temporary file and a rename (readers never see a half-written table)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([[repr(v) if isinstance(v, float) else v for v in r] for r in rows])

    save_atomically(path, write)


# -- the mmengine metric ------------------------------------------------------------------------------------
def _get(sample: dict | object, name: str, default: object = None) -> object:
    """A field or metainfo value of a sample (a dict from the evaluator, or a ``SegDataSample``)."""
    if isinstance(sample, dict):
        return sample.get(name, default)
    if name in sample.metainfo:
        return sample.metainfo[name]
    return getattr(sample, name, default)


def _label_map(sample: dict | object, name: str) -> np.ndarray:
    field = _get(sample, name)
    if field is None:
        raise KeyError(f"MedicalMetric needs {name} in every data sample")
    data = field["data"] if isinstance(field, dict) else field.data
    return np.asarray(torch.as_tensor(data).cpu()).squeeze()


@METRICS.register_module()
class MedicalMetric(BaseMetric):
    """Per-class, per-case DSC and HD95 over whole volumes, with a printed table and a CSV.

    Slice-wise predictions (from a slice dataset: samples carry ``case_name``, ``slice_index`` and
    ``num_slices`` in their metainfo, plus ``spacing`` ``(D, H, W)``) are gathered per case; a volume is scored
    as soon as all its slices are in and then dropped, so memory holds the volumes in progress only. Samples
    without ``slice_index`` are whole volumes (``pred_sem_seg`` / ``gt_sem_seg`` ``(D, H, W)``), and
    ``add_volume`` takes arrays directly (volume inference). Slices still incomplete when ``evaluate`` runs
    (split across ranks) are collected and assembled on the main rank.

    Args:
        protocol: ``'densekit'`` (HD95 in mm, NaN/inf empty-mask rules) or ``'swin-unet'`` (the official
            protocol: HD95 in voxels, its empty-mask rules); see the module docstring.
        num_classes: default ``len(dataset_meta['classes'])``. Class 0 (background) is not scored.
        output_dir: where to write ``csv_name`` (per case rows and a mean row); None writes nothing.
        csv_name: file name of the table.
        save_predictions: also write each case's predicted labels to ``output_dir/<case>_pred.nii.gz`` with
            the source affine (slices carry ``affine`` from NIfTI datasets; otherwise the diagonal affine of
            the spacing).
        collect_device, prefix: as in ``mmengine.evaluator.BaseMetric``.

    Returns ``mDSC``, ``mHD95`` and ``DSC.{class}`` / ``HD95.{class}`` for each scored class.
    """

    def __init__(self, protocol: str = "densekit", num_classes: int | None = None, output_dir: str | None = None,
                 csv_name: str = "medical_metrics.csv", save_predictions: bool = False, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self._num_classes = num_classes
        self.output_dir = output_dir
        self.csv_name = csv_name
        if save_predictions and not output_dir:
            raise ValueError("MedicalMetric(save_predictions=True) needs an output_dir")
        self.save_predictions = save_predictions
        self._pending: dict[str, dict] = {}
        self.last_rows: list[dict] = []

    # -- classes
    @property
    def num_classes(self) -> int:
        if self._num_classes is not None:
            return self._num_classes
        classes = (self.dataset_meta or {}).get("classes")
        if not classes:
            raise ValueError("MedicalMetric needs num_classes or dataset_meta['classes'] (set by the Runner)")
        return len(classes)

    def class_names(self) -> list[str]:
        classes = (self.dataset_meta or {}).get("classes")
        if classes and len(classes) == self.num_classes:
            return [str(c) for c in classes[1:]]
        return [f"class_{c}" for c in range(1, self.num_classes)]

    # -- accumulation
    def score_volume(self, pred: np.ndarray, gt: np.ndarray, case_name: str,
                     spacing: Sequence[float] | None = None) -> dict:
        """The row ``{case, dsc, hd95}`` of one whole volume ``(D, H, W)``, per scored class."""
        dsc, hd = volume_metrics(pred, gt, self.num_classes, spacing, self.protocol)
        return dict(case=str(case_name), dsc=dsc.tolist(), hd95=hd.tolist())

    def add_volume(self, pred: np.ndarray, gt: np.ndarray, case_name: str,
                   spacing: Sequence[float] | None = None) -> dict:
        """Score one whole volume ``(D, H, W)`` now and keep its row; returns the row."""
        row = self.score_volume(pred, gt, case_name, spacing)
        self.results.append(row)
        return row

    def process(self, data_batch: object, data_samples: Sequence[dict]) -> None:
        dtype = np.uint8 if self.num_classes <= 256 else np.int16
        for sample in data_samples:
            pred = _label_map(sample, "pred_sem_seg").astype(dtype)
            gt = _label_map(sample, "gt_sem_seg").astype(dtype)
            case = str(_get(sample, "case_name") or _get(sample, "img_path") or len(self.results))
            spacing = _get(sample, "spacing")
            index = _get(sample, "slice_index")
            if index is None:
                self.add_volume(pred, gt, case, spacing)
                continue
            entry = self._pending.setdefault(case, dict(num_slices=int(_get(sample, "num_slices")),
                                                        spacing=spacing, affine=_get(sample, "affine"), slices={}))
            entry["slices"][int(index)] = (pred, gt)
            if len(entry["slices"]) == entry["num_slices"]:
                self.results.append(self._assemble(case, self._pending.pop(case)))

    def _assemble(self, case: str, entry: dict) -> dict:
        """Stack a case's slices into volumes and score them."""
        order = sorted(entry["slices"])
        if order != list(range(entry["num_slices"])):
            raise ValueError(f"case {case}: slices {order[:5]}... do not cover 0..{entry['num_slices'] - 1}")
        pred = np.stack([entry["slices"][k][0] for k in order])
        gt = np.stack([entry["slices"][k][1] for k in order])
        if self.save_predictions:
            self._save_prediction(case, pred, entry)
        return self.score_volume(pred, gt, case, entry["spacing"])

    def _save_prediction(self, case: str, pred: np.ndarray, entry: dict) -> None:
        affine = entry.get("affine")
        affine = np.asarray(affine, np.float64) if affine is not None else spacing_affine(entry["spacing"] or (1, 1, 1))
        path = save_nifti(pred, affine, osp.join(self.output_dir, f"{case}_pred.nii.gz"))
        print_log(f"MedicalMetric: wrote {path}", logger="current")

    def evaluate(self, size: int) -> dict:
        # Incomplete cases travel with the results (several ranks hold parts of them) and are assembled later.
        for case, entry in self._pending.items():
            self.results.append(dict(partial=case, **entry))
        self._pending = {}
        return super().evaluate(size)

    def compute_metrics(self, results: list) -> dict[str, float]:
        rows = [r for r in results if "partial" not in r]
        scored = {r["case"] for r in rows}
        merged: dict[str, dict] = {}
        for part in (r for r in results if "partial" in r):
            if part["partial"] in scored:  # slices repeated by a distributed sampler's padding
                continue
            entry = merged.setdefault(part["partial"], dict(num_slices=part["num_slices"], spacing=part["spacing"],
                                                            affine=part.get("affine"), slices={}))
            entry["slices"].update(part["slices"])
        for case, entry in merged.items():
            if len(entry["slices"]) < entry["num_slices"]:
                print_log(f"MedicalMetric: case {case} got {len(entry['slices'])} of {entry['num_slices']} slices "
                          "(a subset of the dataset?); it is not scored", logger="current", level=logging.WARNING)
                continue
            rows.append(self._assemble(case, entry))
        rows.sort(key=lambda r: r["case"])
        self.last_rows = rows
        return self.report(rows)

    def report(self, rows: Sequence[dict]) -> dict[str, float]:
        """Print the per-class and per-case tables, write the CSV, return the summary."""
        names = self.class_names()
        summary = summarize(rows, names, self.protocol) if rows else \
            dict(DSC=np.full(len(names), np.nan), HD95=np.full(len(names), np.nan), mDSC=math.nan, mHD95=math.nan)
        unit = "mm" if self.protocol == "densekit" else "voxels"
        class_rows = [[n, float(d), float(h)] for n, d, h in zip(names, summary["DSC"], summary["HD95"])]
        class_rows.append(["mean", summary["mDSC"], summary["mHD95"]])
        header = ["case", "mean DSC", f"mean HD95 ({unit})"] + [f"{k} {n}" for n in names for k in ("DSC", "HD95")]
        case_rows = [[r["case"], _mean(np.array(r["dsc"]), self.protocol), _mean(np.array(r["hd95"]), self.protocol),
                      *[float(v) for pair in zip(r["dsc"], r["hd95"]) for v in pair]] for r in rows]
        mean_row = ["mean", summary["mDSC"], summary["mHD95"],
                    *[float(v) for pair in zip(summary["DSC"], summary["HD95"]) for v in pair]]
        print_log(f"per class results ({len(rows)} cases, protocol {self.protocol!r}, HD95 in {unit}):\n"
                  + format_table(["Class", "DSC", f"HD95 ({unit})"], class_rows)
                  + "\nper case results:\n" + format_table(["case", "mean DSC", f"mean HD95 ({unit})"],
                                                           [r[:3] for r in case_rows]), logger="current")
        if self.output_dir is not None:
            write_csv_atomic(osp.join(self.output_dir, self.csv_name), header, [*case_rows, mean_row])
        out = {"mDSC": summary["mDSC"], "mHD95": summary["mHD95"]}
        for name, d, h in zip(names, summary["DSC"], summary["HD95"]):
            out[f"DSC.{name}"], out[f"HD95.{name}"] = float(d), float(h)
        return out
