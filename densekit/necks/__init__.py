"""Necks: turn the backbone's list of maps into another list (DESIGN.md §3). Importing registers them.

    fpn.py              FPN (hierarchical backbones)
    multi_level.py      mmseg MultiLevelNeck (ViT-UPerNet)
    feature2pyramid.py  mmseg Feature2Pyramid (MAE/BEiT-UPerNet)
    simple_pyramid.py   ViTDet SimpleFeaturePyramid (ViT RPN / detection)
"""
from __future__ import annotations

from .feature2pyramid import Feature2Pyramid
from .fpn import FPN
from .multi_level import MultiLevelNeck
from .simple_pyramid import SimpleFeaturePyramid

__all__ = ["FPN", "Feature2Pyramid", "MultiLevelNeck", "SimpleFeaturePyramid"]
