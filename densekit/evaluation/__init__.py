"""Evaluation metrics; importing this package registers them in ``densekit.registry.METRICS``."""
from __future__ import annotations

from .medical_metric import MedicalMetric, dice, hd95
from .proposal_recall import ProposalRecall, average_recall, image_match_ranks, match_ranks
from .seg_metric import IoUMetric, intersect_and_union, total_area_to_metrics

__all__ = [
    "IoUMetric", "MedicalMetric", "ProposalRecall", "average_recall", "dice", "hd95", "image_match_ranks",
    "intersect_and_union", "match_ranks", "total_area_to_metrics",
]
