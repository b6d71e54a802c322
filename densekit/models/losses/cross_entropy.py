"""mmsegmentation 1.x ``CrossEntropyLoss``: softmax cross-entropy, or the binary (sigmoid) one for one-class heads.

Averaging (``reduction='mean'``), as mmseg 1.2.2's ``cross_entropy``: the sum of the per-pixel losses (each
scaled by its class weight, ignored pixels 0) is divided by ``avg_factor + eps`` (eps = float32 eps, so a crop
whose pixels are all ignored gives 0), where ``avg_factor`` is

- ``avg_non_ignore=False`` (mmseg's default, which its published recipes trained with): every pixel, ignored
  ones included (``labels.numel()``);
- ``avg_non_ignore=True``: the counted (non-ignored) pixels, as ``F.cross_entropy``'s own mean;
- with ``class_weight``: the sum of the pixels' class weights, of the counted pixels only when
  ``avg_non_ignore=True``. mmseg 1.2.2 computes it as ``class_weight[label]`` over *all* labels, which indexes
  the weights with the ignore value 255 and fails whenever a label has an ignored pixel, whichever
  ``avg_non_ignore``. densekit does what it means: the counted pixels' weights, and with
  ``avg_non_ignore=False`` each ignored pixel adds 1, as it does without class weights. Where mmseg runs (no
  ignored pixel) the two agree.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS
from .common import AVG_EPS, check_reduction, class_weight_tensor


def ce_avg_factor(labels: torch.Tensor, ignore_index: int, class_weight: torch.Tensor | None,
                  avg_non_ignore: bool) -> torch.Tensor:
    """mmseg's ``avg_factor`` for softmax cross-entropy (see the module docstring); ``labels`` ``(B, H, W)``."""
    valid = labels != ignore_index
    if class_weight is None:
        counted = valid.sum()
    else:
        counted = (class_weight.to(labels.device)[torch.where(valid, labels, 0)] * valid).sum()
    return counted if avg_non_ignore else counted + (~valid).sum()


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """mmsegmentation's ``CrossEntropyLoss`` (same arguments and defaults).

    Args:
        use_sigmoid: binary cross-entropy with logits on a one-class head ``(B, 1, H, W)`` (labels 0/1; mmseg's
            binary path); False: softmax cross-entropy over the ``K`` classes.
        use_mask: mmseg's mask cross-entropy for per-instance mask heads; refused (no densekit head has one).
        reduction: ``'mean'`` (see the module docstring) or ``'sum'``; ``'none'`` is refused for a training loss.
        class_weight: per-class weights ``(K,)`` (a list, or a .npy/.json/.yaml file); with ``use_sigmoid`` it is
            ``F.binary_cross_entropy_with_logits``'s ``pos_weight``, as in mmseg.
        loss_weight: the loss is multiplied by it.
        loss_name: the key of the loss in the head's loss dict (losses with the same name are summed).
        avg_non_ignore: average over the counted pixels only (default False: over all pixels, mmseg's default).
    """

    def __init__(self, use_sigmoid: bool = False, use_mask: bool = False, reduction: str = "mean",
                 class_weight: Sequence[float] | str | None = None, loss_weight: float = 1.0,
                 loss_name: str = "loss_ce", avg_non_ignore: bool = False) -> None:
        super().__init__()
        if use_mask:
            raise ValueError("CrossEntropyLoss: use_mask=True (mmsegmentation's mask cross-entropy, for per-instance "
                             "mask heads) is not supported: densekit's segmentation heads predict one map per class")
        check_reduction("CrossEntropyLoss", reduction)
        self.use_sigmoid = use_sigmoid
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.avg_non_ignore = avg_non_ignore
        self.register_buffer("class_weight", class_weight_tensor("CrossEntropyLoss", class_weight), persistent=False)

    def extra_repr(self) -> str:
        return f"use_sigmoid={self.use_sigmoid}, avg_non_ignore={self.avg_non_ignore}, loss_weight={self.loss_weight}"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """``(B, K, H, W)`` logits and ``(B, H, W)`` long labels -> the weighted loss (0-dim)."""
        loss = self._binary(logits, labels, ignore_index) if self.use_sigmoid else self._softmax(logits, labels,
                                                                                                  ignore_index)
        return self.loss_weight * loss

    def _softmax(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        weight = self.class_weight.to(logits.dtype) if self.class_weight is not None else None
        # Per pixel: class_weight[label] * nll, 0 where ignored.
        per_pixel = F.cross_entropy(logits, labels, weight=weight, reduction="none", ignore_index=ignore_index)
        if self.reduction == "sum":
            return per_pixel.sum()
        return per_pixel.sum() / (ce_avg_factor(labels, ignore_index, self.class_weight, self.avg_non_ignore)
                                  + AVG_EPS)

    def _binary(self, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """mmseg's ``binary_cross_entropy`` for ``(B, 1, H, W)`` logits: ignored pixels weigh 0; the mean is over
        every pixel (``avg_non_ignore=False``, no eps, as mmseg) or over the counted ones (``+ eps``)."""
        if logits.shape[1] != 1:
            raise ValueError(f"CrossEntropyLoss(use_sigmoid=True) is for one-class heads (B, 1, H, W), got logits "
                             f"{tuple(logits.shape)}")
        valid = labels != ignore_index
        if valid.any() and labels[valid].max() > 1:
            raise ValueError("CrossEntropyLoss(use_sigmoid=True): a one-class head's labels must be 0 or 1 (or the "
                             f"ignore index {ignore_index}), got {labels[valid].max().item()}")
        target = torch.where(valid, labels, 0).to(logits.dtype)
        pos_weight = self.class_weight.to(logits.dtype) if self.class_weight is not None else None
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target, pos_weight=pos_weight,
                                                       reduction="none") * valid
        if self.reduction == "sum":
            return per_pixel.sum()
        if self.avg_non_ignore:
            return per_pixel.sum() / (valid.sum() + AVG_EPS)
        return per_pixel.mean()
