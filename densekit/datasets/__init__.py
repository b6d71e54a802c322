"""Segmentation datasets and transforms; importing this package registers them in ``densekit.registry``."""
from __future__ import annotations

from . import transforms
from .ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataset
from .base import SegDataset, default_palette
from .demo import DEMO_CLASSES, DEMO_PALETTE, DemoDataset, make_demo_dataset, make_demo_scene

__all__ = [
    "ADE20K_CLASSES", "ADE20K_PALETTE", "ADE20KDataset", "DEMO_CLASSES", "DEMO_PALETTE", "DemoDataset",
    "SegDataset", "default_palette", "make_demo_dataset", "make_demo_scene", "transforms",
]
