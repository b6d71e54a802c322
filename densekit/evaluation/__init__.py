"""Evaluation metrics; importing this package registers them in ``densekit.registry.METRICS``."""
from __future__ import annotations

from .seg_metric import IoUMetric, intersect_and_union, total_area_to_metrics

__all__ = ["IoUMetric", "intersect_and_union", "total_area_to_metrics"]
