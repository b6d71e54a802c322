"""Segmentation losses: cross-entropy with an ignore label, soft Dice, and their weighted sum."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                   eps: float = 1e-5) -> torch.Tensor:
    """Mean over classes of ``1 - 2|P*Y| / (|P| + |Y|)`` on softmax probabilities.

    Args:
        logits: ``(B, K, H, W)``.
        labels: ``(B, H, W)`` long; ``ignore_index`` pixels count for neither P nor Y.
    """
    valid = (labels != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * valid
    one_hot = F.one_hot(labels.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2)
    one_hot = one_hot.to(logits.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    return (1 - (2 * intersection + eps) / (denominator + eps)).mean()


class SegLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` on logits resized to the label size.

    Args:
        ce_weight: weight of pixel-wise cross-entropy (mmseg ``loss_weight``).
        dice_weight: weight of soft Dice (0 disables it).
        class_weight: optional per-class CE weights.
        ignore_index: label value that contributes nothing.
        align_corners: for the bilinear resize of the logits to the label size.
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 0.0, class_weight: Sequence[float] | None = None,
                 ignore_index: int = 255, align_corners: bool = False) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        weight = torch.tensor(class_weight, dtype=torch.float32) if class_weight is not None else None
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, K, h, w)`` logits and ``(B, H, W)`` labels -> ``{'loss_ce', ['loss_dice'], 'acc_seg'}``."""
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        out = {}
        if self.ce_weight:
            weight = self.class_weight.to(logits.dtype) if self.class_weight is not None else None
            ce = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index)
            # An all-ignore crop gives NaN from the mean over zero pixels; it carries no signal.
            out["loss_ce"] = self.ce_weight * torch.nan_to_num(ce, nan=0.0)
        if self.dice_weight:
            out["loss_dice"] = self.dice_weight * soft_dice_loss(logits, labels, self.ignore_index)
        with torch.no_grad():
            valid = labels != self.ignore_index
            correct = (logits.argmax(1) == labels) & valid
            out["acc_seg"] = 100.0 * correct.sum() / valid.sum().clamp(min=1)
        return out
