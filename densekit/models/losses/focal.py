"""mmsegmentation 1.x ``FocalLoss`` (Lin et al. 2017), sigmoid form, per pixel and class.

For every pixel and class ``c`` with ``t = 1`` where the label is ``c`` (else 0) and ``p = sigmoid(x)``:
``BCE(x, t) * (alpha*t + (1-alpha)*(1-t)) * |t - p|^gamma``, times ``class_weight[c]``, times 0 where the label is
the ignore index; then the mean over all ``B*K*H*W`` terms (ignored pixels included, as mmseg) or their sum.

mmseg 1.2.2 computes this with mmcv's CUDA kernel on the GPU; its CPU branch crashes (it keeps
``one_hot[:, num_classes]``, one column, where the CUDA branch keeps ``[:, :num_classes]``). densekit computes
what the CUDA branch means, on any device. A one-class head (``(B, 1, H, W)``) takes label 1 as the positive
class, as mmseg's CUDA branch does.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from .common import check_reduction, class_weight_tensor, reduce


@MODELS.register_module()
class FocalLoss(nn.Module):
    """mmsegmentation's ``FocalLoss`` (same arguments and defaults).

    Args:
        use_sigmoid: must be True (mmseg implements only the sigmoid focal loss).
        gamma: the focusing exponent.
        alpha: the positive-term weight, one float or one per class.
        reduction: ``'mean'`` or ``'sum'`` (``'none'`` is refused for a training loss).
        class_weight: per-class weights ``(K,)``.
        loss_weight: the loss is multiplied by it.
        loss_name: the key of the loss in the head's loss dict.
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float | Sequence[float] = 0.5,
                 reduction: str = "mean", class_weight: Sequence[float] | str | None = None,
                 loss_weight: float = 1.0, loss_name: str = "loss_focal") -> None:
        super().__init__()
        if not use_sigmoid:
            raise ValueError("FocalLoss: use_sigmoid=False is not supported (mmsegmentation implements only the "
                             "sigmoid focal loss)")
        check_reduction("FocalLoss", reduction)
        self.gamma = float(gamma)
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32), persistent=False)
        self.register_buffer("class_weight", class_weight_tensor("FocalLoss", class_weight), persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """``(B, K, H, W)`` logits, ``(B, H, W)`` labels -> the weighted loss (0-dim)."""
        k = logits.shape[1]
        valid = labels != ignore_index
        target = torch.where(valid, labels, 0).unsqueeze(1)
        classes = torch.arange(k, device=labels.device).view(1, k, 1, 1)
        t = (target == (classes if k > 1 else 1)).to(logits.dtype)
        probs = logits.sigmoid()
        alpha = self.alpha.to(logits.dtype).view(1, -1, 1, 1) if self.alpha.dim() else self.alpha.to(logits.dtype)
        focal_weight = (alpha * t + (1 - alpha) * (1 - t)) * ((1 - probs) * t + probs * (1 - t)).pow(self.gamma)
        loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none") * focal_weight
        weight = valid.unsqueeze(1).to(logits.dtype)
        if self.class_weight is not None:
            weight = weight * self.class_weight.to(logits.dtype).view(1, k, 1, 1)
        return self.loss_weight * reduce(loss * weight, self.reduction)
