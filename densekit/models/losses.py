"""Segmentation losses: cross-entropy with an ignore label, soft Dice, and their weighted sum.

Decode heads predict at a fraction of the label size (UPerNet: 1/4) and the loss is taken on the logits
resized to the labels, as mmsegmentation and HuggingFace do. Done the plain way (``F.interpolate`` then
``F.cross_entropy``) that keeps a full-size log-softmax per head for backward and walks several full-size
tensors (150 classes x 512 x 512 x batch 2 = 315 MB each) in forward and backward. ``upsampled_cross_entropy``
gives the same loss and gradient from one full-size buffer that lives only during the forward: it works
through it in cache-sized row chunks, computing the loss, the accuracy and the gradient (softmax minus
one-hot) in place, and keeps only the gradient resized back to the logits. No library offers this fusion;
``reference_upsampled_cross_entropy`` is the plain path the tests hold it to.
"""
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


def reference_upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                                      ignore_index: int = 255, align_corners: bool = False
                                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (weighted) cross-entropy and pixel accuracy (%) of ``logits`` bilinearly resized to ``labels``.

    Args:
        logits: ``(B, K, h, w)``.
        labels: ``(B, H, W)`` long; ``ignore_index`` pixels count for nothing.
        weight: optional ``(K,)`` class weights (the mean is over the weights of the counted pixels).

    Returns:
        (loss, accuracy): 0-dim tensors; the loss is NaN when every pixel is ignored, as ``F.cross_entropy``'s.
    """
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)
    return loss, pixel_accuracy(logits, labels, ignore_index)


@torch.no_grad()
def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Percentage of counted pixels whose arg-max class is the label; ``(B, K, H, W)`` and ``(B, H, W)``."""
    valid = labels != ignore_index
    correct = (logits.argmax(1) == labels) & valid
    return 100.0 * correct.sum() / valid.sum().clamp(min=1)


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Forward computes loss, accuracy and (when needed) the gradient; backward only scales it."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                align_corners: bool, chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(logits.device.type, enabled=False):  # float32 throughout
            return _UpsampledCrossEntropy._forward(ctx, logits, labels, weight, ignore_index, align_corners,
                                                   chunk_elements)

    @staticmethod
    def _forward(ctx, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                 align_corners: bool, chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, height, width = logits.shape[0], logits.shape[1], labels.shape[-2], labels.shape[-1]
        # The one full-size buffer: resized logits, overwritten chunk by chunk with d(loss)/d(resized logits).
        full = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=align_corners)
        valid = labels != ignore_index
        target = torch.where(valid, labels, 0)
        pixel_weight = weight.float()[target] * valid if weight is not None else valid.float()
        total_weight = pixel_weight.sum()
        scale = torch.where(total_weight > 0, 1.0 / total_weight, 0.0)  # all ignored: zero gradient, as F's
        want_grad = ctx.needs_input_grad[0]
        nll = full.new_zeros(())
        correct = torch.zeros((), dtype=torch.long, device=full.device)
        rows = max(1, chunk_elements // (k * width))
        for i in range(b):
            for r0 in range(0, height, rows):
                chunk = full[i, :, r0:r0 + rows]  # (K, R, W) view
                tgt, w_px = target[i, r0:r0 + rows], pixel_weight[i, r0:r0 + rows]
                picked = chunk.gather(0, tgt[None])[0]
                top = chunk.amax(0)
                # Correct when the label's logit is the largest: argmax's answer but for exact ties between
                # classes, which it breaks towards the lower class id (an argmax over the strided class axis
                # would cost 10x this whole loop).
                correct += ((picked == top) & valid[i, r0:r0 + rows]).sum()
                chunk.sub_(top).exp_()  # exp(x - max): the chunk now holds unnormalised softmax
                norm = chunk.sum(0)
                nll += ((norm.log() + top - picked) * w_px).sum()
                if want_grad:  # softmax - one_hot, times the pixel's weight over the total
                    chunk.mul_(w_px * scale / norm)
                    chunk.scatter_add_(0, tgt[None], (-w_px * scale)[None])
        if want_grad:
            grad = torch.ops.aten.upsample_bilinear2d_backward(full, [height, width], list(logits.shape),
                                                               align_corners)
            ctx.save_for_backward(grad.to(logits.dtype))
        del full
        accuracy = 100.0 * correct / valid.sum().clamp(min=1)
        ctx.mark_non_differentiable(accuracy)
        return nll / total_weight, accuracy

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_accuracy: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None


def upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                            ignore_index: int = 255, align_corners: bool = False, chunk_elements: int = 2**20
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference_upsampled_cross_entropy`` in ``chunk_elements``-sized pieces of one full-size buffer (see the
    module docstring); same arguments and results, computed in float32, except that a pixel whose label ties for
    the largest logit counts as correct (argmax would pick the lowest tied class)."""
    if labels.dim() != 3 or logits.dim() != 4 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"expected logits (B, K, h, w) and labels (B, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return _UpsampledCrossEntropy.apply(logits, labels, weight, ignore_index, align_corners, chunk_elements)


class SegLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` on logits resized to the label size.

    Args:
        ce_weight: weight of pixel-wise cross-entropy (mmseg ``loss_weight``).
        dice_weight: weight of soft Dice (0 disables it).
        class_weight: optional per-class CE weights.
        ignore_index: label value that contributes nothing.
        align_corners: for the bilinear resize of the logits to the label size.
        fused: cross-entropy alone on logits smaller than the labels goes through ``upsampled_cross_entropy``
            (False: the plain resize-then-``F.cross_entropy`` path).
    """

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 0.0, class_weight: Sequence[float] | None = None,
                 ignore_index: int = 255, align_corners: bool = False, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.align_corners = align_corners
        weight = torch.tensor(class_weight, dtype=torch.float32) if class_weight is not None else None
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, K, h, w)`` logits and ``(B, H, W)`` labels -> ``{'loss_ce', ['loss_dice'], 'acc_seg'}``."""
        weight = self.class_weight
        if self.fused and self.ce_weight and not self.dice_weight and logits.shape[-2:] != labels.shape[-2:]:
            ce, accuracy = upsampled_cross_entropy(logits, labels, weight, self.ignore_index, self.align_corners)
            return {"loss_ce": self.ce_weight * torch.nan_to_num(ce, nan=0.0), "acc_seg": accuracy}
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        out = {}
        if self.ce_weight:
            weight = weight.to(logits.dtype) if weight is not None else None
            ce = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index)
            # An all-ignore crop gives NaN from the mean over zero pixels; it carries no signal.
            out["loss_ce"] = self.ce_weight * torch.nan_to_num(ce, nan=0.0)
        if self.dice_weight:
            out["loss_dice"] = self.dice_weight * soft_dice_loss(logits, labels, self.ignore_index)
        out["acc_seg"] = pixel_accuracy(logits, labels, self.ignore_index)
        return out
