"""Reference formulas of the segmentation losses, written from mmsegmentation 1.2.2's documented definitions
(``mmseg/models/losses/*.py``, ``utils.weight_reduce_loss``) and the official Swin-Unet ``utils.DiceLoss``, in the
plainest form (explicit one-hot tensors, per-class loops), for tests to hold densekit's losses to. mmseg itself
cannot be imported here (it needs a compiled mmcv).

Each takes logits ``(B, K, H, W)`` and labels ``(B, H, W)`` at the same size; ``resize_then`` puts the bilinear
resize of a head's logits in front, which is the reference of the fused CPU path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = torch.finfo(torch.float32).eps  # weight_reduce_loss: loss.sum() / (avg_factor + eps)


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, K, H, W)`` float; labels outside ``[0, K)`` (the ignore value) give all zeros."""
    return torch.stack([(labels == c).float() for c in range(k)], dim=1)


def cross_entropy(logits, labels, class_weight=None, avg_non_ignore=False, ignore_index=255, reduction="mean"):
    """mmseg ``cross_entropy``: sum_i w[y_i] * -log softmax(x_i)[y_i] over counted pixels, divided by avg_factor + eps:
    all pixels (default) or the counted ones; with class weights, the weights' sum (ignored pixels count 1 unless
    avg_non_ignore: mmseg 1.2.2 indexes the weights with 255 there, see densekit's docstring)."""
    k = logits.shape[1]
    valid = (labels != ignore_index).float()
    target = one_hot(labels, k) * valid.unsqueeze(1)
    w = torch.ones(k) if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
    pixel_w = (target * w.view(1, k, 1, 1)).sum(1)  # w[y], 0 at ignored pixels
    nll = -(F.log_softmax(logits, 1) * target).sum(1)
    total = (pixel_w * nll).sum()
    if reduction == "sum":
        return total
    factor = pixel_w.sum() + (0.0 if avg_non_ignore else (1 - valid).sum())
    return total / (factor + EPS)


def binary_cross_entropy(logits, labels, avg_non_ignore=False, ignore_index=255):
    """mmseg ``binary_cross_entropy`` for a one-class head: BCE with logits, ignored pixels weighted 0, mean over
    all pixels (no avg_factor) or the counted sum over (count + eps)."""
    valid = (labels != ignore_index).float()
    x, t = logits[:, 0], labels.float() * valid
    per_pixel = (torch.clamp(x, min=0) - x * t + torch.log1p(torch.exp(-x.abs()))) * valid
    return per_pixel.sum() / (valid.sum() + EPS) if avg_non_ignore else per_pixel.mean()


def dice(logits, labels, use_sigmoid=True, naive_dice=False, eps=1e-3, drop_class=None):
    """mmseg 1.2.2 ``DiceLoss``: one-hot via ``one_hot(clamp(label, 0, K), K + 1)[..., :K]``; per image over all
    (kept) channels and pixels ``1 - 2a / (b + eps + c + eps)``; mean over the batch."""
    k = logits.shape[1]
    target = F.one_hot(labels.clamp(0, k), k + 1)[..., :k].permute(0, 3, 1, 2).float()
    p = logits.sigmoid() if use_sigmoid else logits.softmax(1)
    keep = [c for c in range(k) if c != drop_class]
    p, target = p[:, keep].flatten(1), target[:, keep].flatten(1)
    a = (p * target).sum(1)
    if naive_dice:
        d = (2 * a + eps) / (p.sum(1) + target.sum(1) + eps)
    else:
        d = 2 * a / ((p * p).sum(1) + eps + (target * target).sum(1) + eps)
    return (1 - d).mean()


def focal(logits, labels, gamma=2.0, alpha=0.5, class_weight=None, ignore_index=255):
    """mmseg ``FocalLoss`` (what its CUDA branch computes): pixels flattened to ``(N, C)``, one-hot targets,
    ``BCE * (alpha t + (1 - alpha)(1 - t)) * (1 - pt)^gamma`` with ``1 - pt = (1 - p) t + p (1 - t)``, weighted by
    class_weight and the valid mask, mean over ``N * C``."""
    k = logits.shape[1]
    pred = logits.permute(0, 2, 3, 1).reshape(-1, k)
    flat = labels.reshape(-1)
    valid = (flat != ignore_index).float().view(-1, 1)
    flat = torch.where(flat == ignore_index, 0, flat)
    t = F.one_hot(flat, k).float()
    p = pred.sigmoid()
    a = torch.as_tensor(alpha, dtype=torch.float32)
    loss = F.binary_cross_entropy_with_logits(pred, t, reduction="none") * (a * t + (1 - a) * (1 - t)) * \
        ((1 - p) * t + p * (1 - t)).pow(gamma)
    weight = valid * (torch.as_tensor(class_weight, dtype=torch.float32) if class_weight is not None else 1.0)
    return (loss * weight).mean()


def lovasz_softmax(logits, labels, classes="present", ignore_index=255):
    """Berman et al.'s Lovasz-Softmax over the counted pixels of the batch: per class, errors sorted decreasing,
    dotted with the increments of the Jaccard loss along the sorted order; mean over the classes."""
    k = logits.shape[1]
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, k)
    flat = labels.reshape(-1)
    probs, flat = probs[flat != ignore_index], flat[flat != ignore_index]
    losses = []
    for c in (range(k) if classes in ("all", "present") else classes):
        fg = (flat == c).float()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        order = errors.argsort(descending=True)
        losses.append((errors[order] * jaccard_increments(fg[order])).sum())
    return torch.stack(losses).mean()


def jaccard_increments(fg_sorted):
    """Berman et al.: the Jaccard loss when the first ``i`` pixels of the error order count as wrong, for each
    ``i``, and its increments along that order (``fg_sorted``: the 0/1 labels in that order)."""
    jaccard = []
    for i in range(1, len(fg_sorted) + 1):
        top = fg_sorted[:i]
        inter = fg_sorted.sum() - top.sum()
        union = fg_sorted.sum() + (1 - top).sum()
        jaccard.append(1 - inter / union)
    jaccard = torch.stack(jaccard)
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_hinge(logits, labels, ignore_index=255):
    """Berman et al.'s binary Lovasz hinge over the counted pixels of ``(B, 1, H, W)`` logits: errors
    ``1 - x * (2y - 1)`` sorted decreasing, their ReLU dotted with the Jaccard increments."""
    x, y = logits[:, 0].reshape(-1), labels.reshape(-1)
    keep = y != ignore_index
    x, fg = x[keep], y[keep].float()
    errors = 1 - x * (2 * fg - 1)
    order = errors.argsort(descending=True)
    return (F.relu(errors[order]) * jaccard_increments(fg[order])).sum()


def jaccard_loss_of_hard_predictions(logits, labels, ignore_index=255):
    """Mean over the classes present in the labels of ``1 - IoU`` of the arg-max prediction: what the Lovasz
    extension equals when the probabilities are one-hot."""
    pred, valid = logits.argmax(1), labels != ignore_index
    losses = []
    for c in labels[valid].unique().tolist():
        inter = ((pred == c) & (labels == c) & valid).sum()
        union = (((pred == c) | (labels == c)) & valid).sum()
        losses.append(1 - inter / union)
    return torch.stack(losses).float().mean()


def swin_unet_dice(logits, labels, smooth=1e-5):
    """The official Swin-Unet ``DiceLoss(n)(logits, labels, softmax=True)``: per class over the batch,
    ``1 - (2 sum(p y) + smooth) / (sum(p p) + sum(y y) + smooth)``, summed and divided by the class count."""
    k = logits.shape[1]
    p, y = logits.softmax(1), one_hot(labels, k)
    loss = 0.0
    for i in range(k):
        loss += 1 - (2 * (p[:, i] * y[:, i]).sum() + smooth) / ((p[:, i] ** 2).sum() + (y[:, i] ** 2).sum() + smooth)
    return loss / k


def accuracy(logits, labels, ignore_index=255):
    """mmseg ``accuracy`` (top-1, %, over the counted pixels)."""
    valid = labels != ignore_index
    return 100.0 * ((logits.argmax(1) == labels) & valid).sum() / valid.sum()


def resize_then(loss_fn, logits, labels, align_corners=False, **kwargs):
    """``loss_fn`` of ``logits`` resized bilinearly to the labels (mmseg's ``loss_by_feat``)."""
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
    return loss_fn(up, labels, **kwargs)
