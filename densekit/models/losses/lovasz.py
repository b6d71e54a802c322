"""mmsegmentation 1.x ``LovaszLoss`` (Berman et al. 2018): the Lovasz extension of the Jaccard loss.

Multi-class (``loss_type='multi_class'``): softmax probabilities; over the counted pixels (the head's ignore label
dropped), for each class ``c`` in ``classes``: errors ``|[label == c] - p_c|`` sorted in decreasing order, dotted
with the Lovasz gradient of the sorted foreground; then the mean over those classes (each times
``class_weight[c]``). Binary (``loss_type='binary'``, one-class heads): the Lovasz hinge on the logits with
signs ``2*label - 1``. ``per_image``: one loss per image, then their mean or sum; else one loss over the batch.
A batch (or image) with no counted pixel gives 0 with a zero gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from .common import check_reduction, class_weight_tensor, reduce


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension at the sorted errors (Berman et al., Alg. 1); ``(P,)`` 0/1 -> ``(P,)``."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor, classes: str | Sequence[int],
                        class_weight: torch.Tensor | None) -> torch.Tensor:
    """``(P, K)`` probabilities of the counted pixels and their ``(P,)`` labels -> the loss (0-dim)."""
    if probs.numel() == 0:
        return probs.sum() * 0.0
    chosen = range(probs.shape[1]) if classes in ("all", "present") else classes
    losses = []
    for c in chosen:
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and not fg.any():
            continue
        errors_sorted, perm = (fg - probs[:, c]).abs().sort(descending=True)
        loss = torch.dot(errors_sorted, lovasz_grad(fg[perm]))
        losses.append(loss * class_weight[c] if class_weight is not None else loss)
    return torch.stack(losses).mean() if losses else probs.sum() * 0.0


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(P,)`` logits of the counted pixels and their ``(P,)`` 0/1 labels -> the binary Lovasz hinge (0-dim)."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    fg = labels.to(logits.dtype)
    errors_sorted, perm = (1.0 - logits * (2.0 * fg - 1.0)).sort(descending=True)
    return torch.dot(F.relu(errors_sorted), lovasz_grad(fg[perm]))


@MODELS.register_module()
class LovaszLoss(nn.Module):
    """mmsegmentation's ``LovaszLoss`` (same arguments, defaults and rules).

    Args:
        loss_type: ``'multi_class'`` (Lovasz-Softmax) or ``'binary'`` (Lovasz hinge, one-class heads).
        classes: ``'present'`` (classes in the counted labels), ``'all'``, or a list of class ids.
        per_image: one loss per image, reduced by ``reduction``; False: one loss over the batch, and then
            ``reduction`` must be ``'none'`` (mmseg's rule: it does not apply), which the batch loss leaves a number.
        reduction: with ``per_image``: ``'mean'`` or ``'sum'`` over the images (``'none'`` is refused there).
        class_weight: per-class weights ``(K,)`` (multi-class only).
        loss_weight: the loss is multiplied by it.
        loss_name: the key of the loss in the head's loss dict.
    """

    def __init__(self, loss_type: str = "multi_class", classes: str | Sequence[int] = "present",
                 per_image: bool = False, reduction: str = "mean", class_weight: Sequence[float] | str | None = None,
                 loss_weight: float = 1.0, loss_name: str = "loss_lovasz") -> None:
        super().__init__()
        if loss_type not in ("binary", "multi_class"):
            raise ValueError(f"LovaszLoss: loss_type must be 'binary' or 'multi_class', got {loss_type!r}")
        if not (classes in ("all", "present") or (isinstance(classes, Sequence) and not isinstance(classes, str)
                                                   and all(isinstance(c, int) for c in classes))):
            raise ValueError(f"LovaszLoss: classes must be 'all', 'present' or a list of class ids, got {classes!r}")
        if not per_image and reduction != "none":
            raise ValueError(f"LovaszLoss: reduction={reduction!r} with per_image=False; mmsegmentation requires "
                             "reduction='none' there (the loss over the batch is one number already)")
        if per_image:
            check_reduction("LovaszLoss(per_image=True)", reduction)
        self.loss_type = loss_type
        self.classes = classes if isinstance(classes, str) else list(classes)
        self.per_image = per_image
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.register_buffer("class_weight", class_weight_tensor("LovaszLoss", class_weight), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """``(B, K, H, W)`` logits, ``(B, H, W)`` labels -> the weighted loss (0-dim)."""
        if self.loss_type == "binary" and logits.shape[1] != 1:
            raise ValueError(f"LovaszLoss(loss_type='binary') is for one-class heads (B, 1, H, W), got logits "
                             f"{tuple(logits.shape)}")
        scores = logits.softmax(1) if self.loss_type == "multi_class" else logits
        if self.per_image:
            losses = torch.stack([self._flat(s[None], lab[None], ignore_index) for s, lab in zip(scores, labels)])
            return self.loss_weight * reduce(losses, self.reduction)
        return self.loss_weight * self._flat(scores, labels, ignore_index)

    def _flat(self, scores: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """The loss over the counted pixels of ``(b, K, H, W)`` scores and ``(b, H, W)`` labels."""
        valid = (labels != ignore_index).flatten()
        labels = labels.flatten()[valid]
        if self.loss_type == "binary":
            return lovasz_hinge_flat(scores.flatten()[valid], labels)
        probs = scores.permute(0, 2, 3, 1).reshape(-1, scores.shape[1])[valid]
        weight = self.class_weight.to(probs.dtype) if self.class_weight is not None else None
        return lovasz_softmax_flat(probs, labels, self.classes, weight)
