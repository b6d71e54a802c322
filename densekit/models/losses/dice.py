"""Dice losses: mmsegmentation 1.x ``DiceLoss`` (V-Net's, per image) and ``SwinUnetDiceLoss`` (the official Swin-Unet
trainer's, per class over the batch). The two are different formulas; configs pick one by name."""
from __future__ import annotations

import torch
from torch import nn

from ...registry import MODELS
from .common import check_reduction, reduce


def _label_hits(labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` labels -> ``(B, H, W)`` bool: the label is one of the kept classes (``keep``, ``(K,)`` bool)."""
    in_range = (labels >= 0) & (labels < keep.numel())
    return in_range & keep[labels.clamp(0, keep.numel() - 1)]


@MODELS.register_module()
class DiceLoss(nn.Module):
    """mmsegmentation 1.2.2's ``DiceLoss`` (same arguments and defaults).

    Per image ``b``, over every kept class channel and pixel at once: ``1 - 2*sum(p*y) / (sum(p^2) + eps +
    sum(y^2) + eps)`` (``naive_dice=True``: ``1 - (2*sum(p*y) + eps) / (sum(p) + sum(y) + eps)``), then the mean
    (or sum) over the batch. ``y`` is the one-hot label; as in mmseg 1.2.2 a pixel labelled with the head's
    ignore index (255) has an all-zero ``y`` but its prediction still counts in ``sum(p^2)``.

    Args:
        use_sigmoid: ``p = sigmoid(logits)`` (mmseg's default); False: softmax over the classes (none for one).
        activate: False: the logits are used as ``p`` as they are.
        reduction: over the batch: ``'mean'`` or ``'sum'`` (``'none'`` is refused for a training loss).
        naive_dice: first powers in the denominator.
        loss_weight: the loss is multiplied by it.
        ignore_index: mmseg's meaning for DiceLoss: a *class channel* left out of the sums (255, the default,
            leaves none out); the head's ignore label is not read here.
        eps: the smoothing term.
        loss_name: the key of the loss in the head's loss dict.
    """

    def __init__(self, use_sigmoid: bool = True, activate: bool = True, reduction: str = "mean",
                 naive_dice: bool = False, loss_weight: float = 1.0, ignore_index: int | None = 255,
                 eps: float = 1e-3, loss_name: str = "loss_dice") -> None:
        super().__init__()
        check_reduction("DiceLoss", reduction)
        self.use_sigmoid = use_sigmoid
        self.activate = activate
        self.reduction = reduction
        self.naive_dice = naive_dice
        self.loss_weight = loss_weight
        self.ignore_index = ignore_index
        self.eps = eps
        self.loss_name = loss_name

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """``(B, K, H, W)`` logits, ``(B, H, W)`` labels -> the weighted loss (0-dim). ``ignore_index`` (the
        head's) is accepted for the common loss signature and unused, as in mmseg 1.2.2."""
        k = logits.shape[1]
        probs = logits
        if self.activate:
            probs = logits.sigmoid() if self.use_sigmoid else (logits.softmax(1) if k != 1 else logits)
        keep = torch.arange(k, device=logits.device) != (self.ignore_index if self.ignore_index is not None else -1)
        if not keep.any():
            raise ValueError(f"DiceLoss: ignore_index={self.ignore_index} leaves out the only class")
        kept = probs[:, keep]
        # sum(p*y) and sum(y*y) from the labels directly: y is one-hot, so no (B, K, H, W) one-hot is built.
        hits = _label_hits(labels, keep)
        picked = probs.gather(1, labels.clamp(0, k - 1).unsqueeze(1)).squeeze(1) * hits
        intersection = picked.flatten(1).sum(1)
        label_sum = hits.flatten(1).sum(1).to(probs.dtype)
        if self.naive_dice:
            dice = (2 * intersection + self.eps) / (kept.flatten(1).sum(1) + label_sum + self.eps)
        else:
            dice = 2 * intersection / ((kept * kept).flatten(1).sum(1) + self.eps + label_sum + self.eps)
        return self.loss_weight * reduce(1 - dice, self.reduction)


@MODELS.register_module()
class SwinUnetDiceLoss(nn.Module):
    """The official Swin-Unet trainer's Dice loss (HuCaoFighting/Swin-Unet ``utils.DiceLoss`` with ``softmax=True``).

    ``p = softmax(logits)``, ``y`` one-hot; per class ``c`` over the whole batch:
    ``1 - (2*sum(p_c*y_c) + smooth) / (sum(p_c^2) + sum(y_c^2) + smooth)``, then the mean over the classes.
    densekit extension: pixels labelled with the head's ignore index count for neither ``p`` nor ``y`` (the
    official data has none).

    Args:
        loss_weight: the loss is multiplied by it (the official recipe: 0.6, beside 0.4 cross-entropy).
        smooth: the official 1e-5.
        loss_name: the key of the loss in the head's loss dict.
    """

    def __init__(self, loss_weight: float = 1.0, smooth: float = 1e-5, loss_name: str = "loss_dice") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.smooth = smooth
        self.loss_name = loss_name

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """``(B, K, H, W)`` logits, ``(B, H, W)`` labels -> the weighted loss (0-dim)."""
        k = logits.shape[1]
        valid = (labels != ignore_index).unsqueeze(1)
        probs = logits.softmax(1) * valid
        one_hot = (labels.unsqueeze(1) == torch.arange(k, device=labels.device).view(1, k, 1, 1)) & valid
        one_hot = one_hot.to(probs.dtype)
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        denominator = (probs * probs).sum(dims) + one_hot.sum(dims)  # y*y = y
        return self.loss_weight * (1 - (2 * intersection + self.smooth) / (denominator + self.smooth)).mean()
