"""Class-agnostic proposal average recall, equal to pycocotools ``COCOeval(iouType='bbox')`` with
``params.useCats = 0`` and ``params.maxDets = [100, 300, 1000]`` (what mmdetection's ``CocoMetric(metric=
'proposal')`` reports), computed without pycocotools.

COCOeval's rules, reproduced per image and area range:

- proposals are sorted by score (stable, descending) and the first ``max(proposal_nums)`` kept;
- a ground-truth box counts when it is not ignored (crowd) and its area (COCO's annotation ``area``;
  the box area when none is given) lies in the range, both ends inclusive: all ``[0, 1e10]``, small
  ``[0, 32^2]``, medium ``[32^2, 96^2]``, large ``[96^2, 1e10]``;
- for each IoU threshold ``t`` in ``0.50:0.05:0.95``, proposals in score order greedily take the
  not-yet-matched counted box of highest IoU among those with IoU ``>= min(t, 1 - 1e-10)`` (ties go to
  the later box). Ignored boxes never take a counted box from a proposal, so they do not change which
  counted boxes are matched and are left out;
- recall at ``n`` proposals = boxes matched by a proposal ranked below ``n``, summed over the dataset,
  divided by the number of counted boxes (-1 when there are none); AR = the mean over thresholds.

IoU is ``torchvision.ops.box_iou`` in float64 on ``(x1, y1, x2, y2)`` boxes, as pycocotools' ``bbIou``
(also float64, no +1 pixel). Results are fractions in [0, 1], unrounded (mmdet rounds to 3 decimals).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from torchvision.ops import box_iou

from ..registry import METRICS

COCO_IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # as COCOeval
UNMATCHED = np.iinfo(np.int64).max  # the rank of "no proposal"
AREA_RANGES = {"all": (0.0, 1e5 ** 2), "s": (0.0, 32.0 ** 2), "m": (32.0 ** 2, 96.0 ** 2), "l": (96.0 ** 2, 1e5 ** 2)}


def match_ranks(ious: np.ndarray, iou_thrs: np.ndarray = COCO_IOU_THRS) -> np.ndarray:
    """COCOeval's greedy matching of ``D`` score-sorted proposals to ``G`` counted boxes.

    Args:
        ious: ``(D, G)`` IoU of each proposal (rows in score order) with each box.
        iou_thrs: ``(T,)`` thresholds.

    Returns:
        ``(T, G)`` int64: the rank of the proposal that matched each box at each threshold, ``UNMATCHED`` if none.
    """
    num_dets, num_gts = ious.shape
    ranks = np.full((len(iou_thrs), num_gts), UNMATCHED, np.int64)
    if num_dets == 0 or num_gts == 0:
        return ranks
    thrs = np.minimum(np.asarray(iou_thrs, np.float64), 1 - 1e-10)[:, None]
    free = np.ones((len(iou_thrs), num_gts), bool)
    rows = np.arange(len(iou_thrs))
    for d in np.nonzero(ious.max(axis=1) >= thrs.min())[0]:  # others reach no threshold: they match nothing
        ok = free & (ious[d][None, :] >= thrs)
        if not ok.any():
            continue
        masked = np.where(ok, ious[d][None, :], -1.0)
        best = num_gts - 1 - np.argmax(masked[:, ::-1], axis=1)  # the last of equal IoUs, as COCOeval
        hit = ok.any(axis=1)
        ranks[rows[hit], best[hit]] = d
        free[rows[hit], best[hit]] = False
        if not free.any():
            break
    return ranks


def image_match_ranks(pred_bboxes: np.ndarray, pred_scores: np.ndarray, gt_bboxes: np.ndarray, gt_areas: np.ndarray,
                      max_dets: int = 1000, iou_thrs: np.ndarray = COCO_IOU_THRS) -> dict[str, np.ndarray]:
    """One image's ``{area range: (T, G_range) ranks}`` (see ``match_ranks``) for its counted boxes.

    Args:
        pred_bboxes: ``(D, 4)`` proposals ``(x1, y1, x2, y2)``; pred_scores: ``(D,)``.
        gt_bboxes: ``(G, 4)`` non-ignored boxes; gt_areas: ``(G,)`` their areas.
        max_dets: proposals kept after sorting by score.
    """
    order = np.argsort(-np.asarray(pred_scores, np.float64), kind="mergesort")[:max_dets]
    dets = torch.as_tensor(np.asarray(pred_bboxes, np.float64).reshape(-1, 4)[order])
    gts = torch.as_tensor(np.asarray(gt_bboxes, np.float64).reshape(-1, 4))
    ious = box_iou(dets, gts).numpy() if len(dets) and len(gts) else np.zeros((len(dets), len(gts)))
    areas = np.asarray(gt_areas, np.float64).reshape(-1)
    out = {}
    for name, (lo, hi) in AREA_RANGES.items():
        keep = (areas >= lo) & (areas <= hi)
        out[name] = match_ranks(ious[:, keep], iou_thrs)
    return out


def average_recall(per_image: Sequence[dict[str, np.ndarray]], proposal_nums: Sequence[int] = (100, 300, 1000),
                   num_thrs: int = len(COCO_IOU_THRS)) -> dict[str, float]:
    """``AR@n`` for each ``n`` and ``AR_s/m/l@max(n)`` from ``image_match_ranks`` results (COCOeval's
    ``stats[6:12]`` with ``maxDets=proposal_nums``)."""
    out = {}
    last = max(proposal_nums)
    wanted = [("all", n, f"AR@{n}") for n in proposal_nums] + [(a, last, f"AR_{a}@{last}") for a in ("s", "m", "l")]
    for area, n, key in wanted:
        ranks = [r[area] for r in per_image if r[area].shape[1]]
        total = sum(r.shape[1] for r in ranks)
        if total == 0:
            out[key] = -1.0
            continue
        matched = sum((r < n).sum(axis=1) for r in ranks)  # (T,)
        assert len(matched) == num_thrs
        out[key] = float(np.mean(matched / total))
    return out


def _get(obj, key: str):
    """A field of a data sample given as a dict (what mmengine's Evaluator passes) or a data element."""
    return obj.get(key) if obj is not None else None


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@METRICS.register_module()
class ProposalRecall(BaseMetric):
    """Average recall of class-agnostic proposals (``pred_instances``) against ``gt_instances``.

    Boxes must be in the same coordinates (original image, as the RPN's ``predict`` and a test pipeline that
    loads annotations after resizing produce). ``gt_instances.areas`` (COCO's annotation areas) decide the
    size ranges when present, else box areas. ``ignored_instances`` (crowd) are not counted.

    Args:
        proposal_nums: the ``n`` of ``AR@n``; size-range ARs use the largest.
        iou_thrs: IoU thresholds (default COCO's 0.50:0.05:0.95).
        collect_device, prefix: as in ``mmengine.evaluator.BaseMetric``.

    Metrics: ``AR@100``, ``AR@300``, ``AR@1000``, ``AR_s@1000``, ``AR_m@1000``, ``AR_l@1000`` (fractions).
    """

    def __init__(self, proposal_nums: Sequence[int] = (100, 300, 1000), iou_thrs: Sequence[float] | None = None,
                 collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.proposal_nums = tuple(int(n) for n in proposal_nums)
        self.iou_thrs = COCO_IOU_THRS if iou_thrs is None else np.asarray(iou_thrs, np.float64)

    def process(self, data_batch: object, data_samples: Sequence) -> None:
        for sample in data_samples:
            pred, gt = _get(sample, "pred_instances"), _get(sample, "gt_instances")
            if pred is None or gt is None:
                raise KeyError("ProposalRecall needs pred_instances and gt_instances in every data sample "
                               "(load annotations in the test pipeline)")
            gt_bboxes = _numpy(_get(gt, "bboxes")).reshape(-1, 4)
            areas = _get(gt, "areas")
            if areas is None:
                areas = (gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (gt_bboxes[:, 3] - gt_bboxes[:, 1])
            self.results.append(image_match_ranks(
                _numpy(_get(pred, "bboxes")), _numpy(_get(pred, "scores")), gt_bboxes, _numpy(areas),
                max(self.proposal_nums), self.iou_thrs))

    def compute_metrics(self, results: list) -> dict[str, float]:
        return average_recall(results, self.proposal_nums, len(self.iou_thrs))
