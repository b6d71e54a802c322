"""Anchor generation with mmdetection 3.x's ``AnchorGenerator`` conventions (v2+ ``center_offset=0``).

Per level ``l`` with stride ``s_l`` and base size ``b_l`` (= ``s_l`` unless ``base_sizes`` is given):

- ``h_ratios = sqrt(ratios)``, ``w_ratios = 1 / h_ratios`` (a ratio is ``h / w``);
- ``ws = b_l * w_ratios[:, None] * scales[None, :]`` flattened, ``hs`` likewise: **ratio-major**, i.e.
  anchor ``a = r * len(scales) + k`` has ratio ``ratios[r]`` and scale ``scales[k]`` (mmdet calls this
  order ``scale_major=True``; torchvision uses the same order);
- base anchors ``[-ws / 2, -hs / 2, ws / 2, hs / 2]`` around ``(0, 0)`` (``center_offset=0``), in float,
  **not rounded** (torchvision rounds them with ``torch.round``);
- the anchor of cell ``(y, x)`` is the base anchor shifted by ``(x * s_l, y * s_l)``: centres on the
  stride grid, the top-left cell centred on pixel ``(0, 0)``;
- order of a level's ``(H_l * W_l * A, 4)`` anchors: row-major over cells (``y`` outer, ``x`` inner), the
  ``A`` anchors of a cell consecutive, which is the order of ``head_output.permute(0, 2, 3, 1).reshape(-1)``
  for a head output with ``A`` channels (or ``4A`` for deltas, anchor-major).

With mmdet's RPN defaults (strides 4..64, ratios 0.5/1/2, scale 8) the base sizes are 32..512 pixels and
each cell has 3 anchors. Anchors are ``(x1, y1, x2, y2)`` in input (padded batch) pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class AnchorGenerator:
    """Multi-level anchors on a stride grid (mmdet ``AnchorGenerator``; square strides only).

    Args:
        strides: one stride per level, in pixels.
        ratios: aspect ratios ``h / w``.
        scales: anchor sizes in units of the level's base size (``octave_base_scale`` is not supported).
        base_sizes: base size per level; defaults to the strides.
        center_offset: anchor centre offset within a cell, in strides (mmdet v2+: 0).
    """

    def __init__(self, strides: Sequence[int] = (4, 8, 16, 32, 64), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 scales: Sequence[float] = (8,), base_sizes: Sequence[float] | None = None,
                 center_offset: float = 0.0) -> None:
        self.strides = [int(s) for s in strides]
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.base_sizes = [float(b) for b in (base_sizes if base_sizes is not None else self.strides)]
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f"{len(self.base_sizes)} base_sizes for {len(self.strides)} strides")
        if not 0.0 <= center_offset < 1.0:
            raise ValueError(f"center_offset must lie in [0, 1), got {center_offset}")
        self.center_offset = center_offset
        self.base_anchors = [self.single_level_base_anchors(b) for b in self.base_sizes]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        """Anchors per cell of each level (``len(ratios) * len(scales)``)."""
        return [len(b) for b in self.base_anchors]

    def single_level_base_anchors(self, base_size: float) -> torch.Tensor:
        """``(A, 4)`` anchors of one cell centred at ``center_offset * base_size``, ratio-major order."""
        centre = self.center_offset * base_size
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        ws = (base_size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        return torch.stack([centre - 0.5 * ws, centre - 0.5 * hs, centre + 0.5 * ws, centre + 0.5 * hs], dim=-1)

    def single_level_grid_anchors(self, level: int, featmap_size: tuple[int, int],
                                  device: torch.device | str = "cpu") -> torch.Tensor:
        """``(H * W * A, 4)`` anchors of level ``level`` for a ``(H, W)`` feature map."""
        h, w = int(featmap_size[0]), int(featmap_size[1])
        stride = self.strides[level]
        shift_x = torch.arange(w, device=device, dtype=torch.float32) * stride
        shift_y = torch.arange(h, device=device, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (shifts[:, None, :] + self.base_anchors[level].to(device)[None, :, :]).reshape(-1, 4)

    def grid_anchors(self, featmap_sizes: Sequence[tuple[int, int]],
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Anchors of every level: ``[(H_l * W_l * A, 4)]``."""
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f"{len(featmap_sizes)} feature maps for {self.num_levels} anchor levels")
        return [self.single_level_grid_anchors(i, size, device) for i, size in enumerate(featmap_sizes)]

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int],
                    device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """mmdet's ``valid_flags``: per level ``(H_l * W_l * A,)`` bool, True for cells whose index lies
        within ``ceil(pad_shape / stride)`` (the image's own padded area, not padding added by batching)."""
        flags = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride = self.strides[level]
            valid_h = min(-(-int(pad_shape[0]) // stride), int(feat_h))
            valid_w = min(-(-int(pad_shape[1]) // stride), int(feat_w))
            valid_y = torch.arange(int(feat_h), device=device) < valid_h
            valid_x = torch.arange(int(feat_w), device=device) < valid_w
            valid = (valid_y[:, None] & valid_x[None, :]).reshape(-1)
            flags.append(valid[:, None].expand(-1, self.num_base_anchors[level]).reshape(-1))
        return flags


def anchor_inside_flags(anchors: torch.Tensor, valid_flags: torch.Tensor, img_shape: tuple[int, int],
                        allowed_border: int = -1) -> torch.Tensor:
    """mmdet's ``anchor_inside_flags``: with ``allowed_border >= 0`` also require the anchor to lie within
    the image grown by ``allowed_border`` pixels; with a negative value (mmdet's RPN) only ``valid_flags``."""
    if allowed_border < 0:
        return valid_flags
    h, w = img_shape[:2]
    return (valid_flags & (anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border)
            & (anchors[:, 2] < w + allowed_border) & (anchors[:, 3] < h + allowed_border))
