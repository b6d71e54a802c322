"""Anchor-to-box assignment and sampling with mmdetection 3.x's ``MaxIoUAssigner`` and ``RandomSampler``.

Assignment (per image; ``IoU`` from ``torchvision.ops.box_iou``, no +1 pixel), for the RPN's
``pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True, gt_max_assign_all=True``:

1. every anchor starts as ignored (-1);
2. an anchor whose best IoU over the boxes is in ``[0, neg_iou_thr)`` is negative (0);
3. an anchor whose best IoU is ``>= pos_iou_thr`` is positive, assigned to its best box (index + 1);
4. low-quality matches: for each box ``i`` in order whose best IoU over the anchors is
   ``>= min_pos_iou``, **every** anchor reaching that best IoU is assigned to box ``i`` (so a later box
   overrides an earlier one on a shared anchor, as in mmdet). torchvision's ``Matcher`` differs here: it
   keeps such anchors on their own best box and has no ``min_pos_iou``.

Without boxes every anchor is negative. Ignored boxes (crowd) are used only when ``ignore_iof_thr > 0``:
anchors covered by one more than that fraction (intersection over the anchor's area) stay ignored; the RPN
recipe has ``ignore_iof_thr=-1``.

Sampling: ``num=256`` anchors per image, at most ``num * pos_fraction`` positives drawn uniformly
(``torch.randperm``), the rest negatives (``neg_pos_ub=-1``: no ratio cap; no boxes added as proposals).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


def box_iof(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` intersection over the area of each of the ``N`` anchors."""
    lt = torch.max(anchors[:, None, :2], boxes[None, :, :2])
    rb = torch.min(anchors[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return inter / area.clamp(min=torch.finfo(anchors.dtype).eps)[:, None]


@dataclass
class AssignResult:
    """``gt_inds`` ``(N,)`` long: 0 negative, -1 ignored, ``i + 1`` assigned to box ``i``;
    ``max_overlaps`` ``(N,)`` the best IoU of each anchor; ``num_gts``."""

    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    num_gts: int


class MaxIoUAssigner:
    """mmdet ``MaxIoUAssigner`` (float thresholds only; see the module docstring for the rules)."""

    def __init__(self, pos_iou_thr: float = 0.7, neg_iou_thr: float = 0.3, min_pos_iou: float = 0.3,
                 match_low_quality: bool = True, gt_max_assign_all: bool = True,
                 ignore_iof_thr: float = -1.0) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.match_low_quality = match_low_quality
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, anchors: torch.Tensor, gt_bboxes: torch.Tensor,
               ignored_bboxes: torch.Tensor | None = None) -> AssignResult:
        """Assign ``(N, 4)`` anchors to ``(G, 4)`` boxes (``ignored_bboxes`` ``(K, 4)`` optional)."""
        num_gts, num_anchors = len(gt_bboxes), len(anchors)
        gt_inds = anchors.new_full((num_anchors,), -1, dtype=torch.long)
        if num_gts == 0 or num_anchors == 0:
            gt_inds[:] = 0
            return AssignResult(gt_inds, anchors.new_zeros(num_anchors), num_gts)
        overlaps = box_iou(gt_bboxes.float(), anchors.float())  # (G, N)
        if self.ignore_iof_thr > 0 and ignored_bboxes is not None and len(ignored_bboxes):
            ignored = box_iof(anchors.float(), ignored_bboxes.float()).max(dim=1).values > self.ignore_iof_thr
            overlaps[:, ignored] = -1
        max_overlaps, argmax_overlaps = overlaps.max(dim=0)
        gt_max_overlaps = overlaps.max(dim=1).values
        gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        positive = max_overlaps >= self.pos_iou_thr
        gt_inds[positive] = argmax_overlaps[positive] + 1
        if self.match_low_quality:
            for i in range(num_gts):  # in order: a later box wins a shared anchor, as in mmdet
                if gt_max_overlaps[i] >= self.min_pos_iou:
                    if self.gt_max_assign_all:
                        gt_inds[overlaps[i] == gt_max_overlaps[i]] = i + 1
                    else:
                        gt_inds[overlaps[i].argmax()] = i + 1
        return AssignResult(gt_inds, max_overlaps, num_gts)


class RandomSampler:
    """mmdet ``RandomSampler``: ``num`` anchors per image, at most ``num * pos_fraction`` positive.

    ``neg_pos_ub >= 0`` caps negatives at ``neg_pos_ub * max(1, positives)``; ``add_gt_as_proposals`` is not
    supported (the RPN samples anchors, not proposals).
    """

    def __init__(self, num: int = 256, pos_fraction: float = 0.5, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = False) -> None:
        if add_gt_as_proposals:
            raise ValueError("RandomSampler(add_gt_as_proposals=True) is for second-stage heads; the RPN samples "
                             "anchors only")
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub

    @staticmethod
    def _choose(indices: torch.Tensor, num: int) -> torch.Tensor:
        if len(indices) <= num:
            return indices
        return indices[torch.randperm(len(indices), device=indices.device)[:num]]

    def sample(self, assign_result: AssignResult) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pos_inds, neg_inds)``: indices of the sampled positive and negative anchors."""
        gt_inds = assign_result.gt_inds
        pos = self._choose(torch.nonzero(gt_inds > 0).flatten(), int(self.num * self.pos_fraction))
        num_neg = self.num - len(pos)
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(1, len(pos))))
        neg = self._choose(torch.nonzero(gt_inds == 0).flatten(), num_neg)
        return pos, neg
