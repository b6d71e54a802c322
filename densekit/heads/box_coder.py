"""Box <-> delta coding with mmdetection 3.x's ``DeltaXYWHBBoxCoder`` conventions.

For a prior (anchor) ``p`` and a box ``g``, both ``(x1, y1, x2, y2)`` with widths ``x2 - x1`` (no +1 pixel):

    dx = (gx - px) / pw,   dy = (gy - py) / ph,   dw = log(gw / pw),   dh = log(gh / ph)

where ``(px, py)`` and ``(gx, gy)`` are the centres; the deltas are then normalised as
``(d - means) / stds`` (the RPN uses means 0, stds 1). Decoding inverts this, after clamping ``dw`` and
``dh`` to ``[-log(1000 / 16), log(1000 / 16)]`` (``wh_ratio_clip=16 / 1000``: a box at most 62.5x larger
or smaller than its prior; mmdet's ``add_ctr_clamp=False``, so centres are not clamped), and clips the
result to the image when ``max_shape`` is given. torchvision's ``BoxCoder`` with weights ``(1, 1, 1, 1)``
computes the same, except that it clamps ``dw``/``dh`` from above only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class DeltaXYWHBBoxCoder:
    """Encode boxes as ``(dx, dy, dw, dh)`` relative to priors and decode them back.

    Args:
        target_means, target_stds: normalisation of the deltas (mmdet's names).
        wh_ratio_clip: ``dw``/``dh`` are clamped to ``[-|log(wh_ratio_clip)|, |log(wh_ratio_clip)|]`` on decode.
        clip_border: clip decoded boxes to ``max_shape`` when it is given.
    """

    encode_size = 4

    def __init__(self, target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), wh_ratio_clip: float = 16 / 1000,
                 clip_border: bool = True) -> None:
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.max_ratio = abs(math.log(wh_ratio_clip))
        self.clip_border = clip_border

    def encode(self, priors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(N, 4)`` priors and ``(N, 4)`` boxes -> ``(N, 4)`` normalised deltas (float32, or float64 if given)."""
        dtype = torch.promote_types(torch.promote_types(priors.dtype, boxes.dtype), torch.float32)
        priors, boxes = priors.to(dtype), boxes.to(dtype)
        pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
        px, py = (priors[:, 0] + priors[:, 2]) * 0.5, (priors[:, 1] + priors[:, 3]) * 0.5
        gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        gx, gy = (boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means, stds = deltas.new_tensor(self.means), deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self, priors: torch.Tensor, deltas: torch.Tensor,
               max_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """``(N, 4)`` priors and ``(N, 4)`` normalised deltas -> ``(N, 4)`` boxes, clipped to
        ``max_shape = (H, W)`` (x to ``[0, W]``, y to ``[0, H]``) when given and ``clip_border``."""
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        pxy = (priors[:, :2] + priors[:, 2:]) * 0.5
        pwh = priors[:, 2:] - priors[:, :2]
        dwh = deltas[:, 2:].clamp(min=-self.max_ratio, max=self.max_ratio)
        gxy = pxy + pwh * deltas[:, :2]
        gwh = pwh * dwh.exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
        if self.clip_border and max_shape is not None:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=max_shape[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=max_shape[0])
        return boxes
