"""Heads: map feature lists to logits (DESIGN.md §3). Importing registers them in ``MODELS``."""
from __future__ import annotations

from .fcn_head import FCNHead
from .uper_head import UPerHead

__all__ = ["FCNHead", "UPerHead"]
