"""Necks: turn the backbone's list of maps into another list (DESIGN.md §3). Importing registers them."""
from __future__ import annotations

from .fpn import FPN

__all__ = ["FPN"]
