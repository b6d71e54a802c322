"""CPU fast path of a head's loss stack: cross-entropy fused with the resize of the logits to the labels.

Decode heads predict at a fraction of the label size (UPerNet: 1/4) and the loss is taken on the logits resized
to the labels, as mmsegmentation and HuggingFace do. The plain path (``DecodeLoss``: ``F.interpolate`` then the
loss) keeps a full-size log-softmax per head for backward and walks several full-size tensors (150 classes x
512 x 512 x batch 2 = 315 MB each) in forward and backward. ``upsampled_cross_entropy`` gives the same loss and
gradient from one full-size buffer that lives only during the forward: it works through it in cache-sized row
chunks, computing the loss, the accuracy and the gradient (softmax minus one-hot) in place, and keeps only the
gradient resized back to the logits. No library offers this fusion.

``FusedDecodeLoss`` takes it for a stack of exactly one softmax ``CrossEntropyLoss`` (``reduction='mean'``, any
class weights, either ``avg_non_ignore``) on CPU logits smaller than the labels, outside graph tracing, and calls
``DecodeLoss``'s own path for everything else; tests/accel hold the two to each other.

The resize's adjoint uses aten's ``upsample_bilinear2d_backward`` (a private op) when this torch has it, checked
once at import against the public computation (autograd through ``F.interpolate``), which is the fallback.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..layers.tracing import is_tracing
from ..models.losses import CrossEntropyLoss, DecodeLoss, ce_avg_factor
from ..models.losses.common import AVG_EPS
from . import register


def public_bilinear_adjoint(grad_full: torch.Tensor, low_shape: tuple[int, ...], align_corners: bool) -> torch.Tensor:
    """The gradient w.r.t. ``low`` ``(B, K, h, w)`` given ``grad_full`` ``(B, K, H, W)`` w.r.t.
    ``F.interpolate(low, size=(H, W), mode='bilinear')``: the bilinear resize's adjoint, by autograd (public ops;
    it briefly holds a second full-size tensor)."""
    low = grad_full.new_zeros(low_shape).requires_grad_(True)
    with torch.enable_grad():
        up = F.interpolate(low, size=grad_full.shape[-2:], mode="bilinear", align_corners=align_corners)
        (grad,) = torch.autograd.grad(up, low, grad_full)
    return grad


def detect_private_adjoint(name: str = "upsample_bilinear2d_backward") -> Callable | None:
    """aten's op ``name`` if this torch has it with the signature used here and it agrees with the public adjoint
    on a small input; else None (checked once, at import)."""
    grad = torch.linspace(-1.0, 1.0, 2 * 5 * 7).view(1, 2, 5, 7)
    try:
        op = getattr(torch.ops.aten, name)
        private = op(grad, [5, 7], [1, 2, 3, 4], False)
    except (AttributeError, RuntimeError, TypeError):
        return None
    return op if torch.allclose(private, public_bilinear_adjoint(grad, (1, 2, 3, 4), False), atol=1e-6) else None


PRIVATE_ADJOINT = detect_private_adjoint()


def bilinear_adjoint(grad_full: torch.Tensor, low_shape: tuple[int, ...], align_corners: bool,
                     private_ops: bool = True) -> torch.Tensor:
    """``public_bilinear_adjoint``, through the private aten op where detected and ``private_ops`` allows it."""
    if private_ops and PRIVATE_ADJOINT is not None:
        return PRIVATE_ADJOINT(grad_full, list(grad_full.shape[-2:]), list(low_shape), align_corners)
    return public_bilinear_adjoint(grad_full, low_shape, align_corners)


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Forward computes loss, accuracy and (when needed) the gradient; backward only scales it."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                align_corners: bool, avg_non_ignore: bool, chunk_elements: int,
                private_ops: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(logits.device.type, enabled=False):  # float32 throughout
            full = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=align_corners)
            avg_factor = ce_avg_factor(labels, ignore_index, weight, avg_non_ignore) + AVG_EPS
            nll, correct = _chunked_softmax_grad(full, labels, weight, ignore_index, 1.0 / avg_factor,
                                                 ctx.needs_input_grad[0], chunk_elements)
            if ctx.needs_input_grad[0]:
                grad = bilinear_adjoint(full, tuple(logits.shape), align_corners, private_ops)
                ctx.save_for_backward(grad.to(logits.dtype))
            del full
        accuracy = 100.0 * correct / (labels != ignore_index).sum().clamp(min=1)
        ctx.mark_non_differentiable(accuracy)
        return nll / avg_factor, accuracy

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_accuracy: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None, None, None


def _chunked_softmax_grad(full: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                          scale: torch.Tensor, want_grad: bool, chunk_elements: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Over ``full`` ``(B, K, H, W)`` (resized logits) in row chunks: the summed weighted NLL and the count of
    correct pixels; with ``want_grad``, ``full`` is overwritten with d(loss)/d(full) = ``w * scale * (softmax -
    one_hot)``."""
    b, k, height, width = full.shape
    valid = labels != ignore_index
    target = torch.where(valid, labels, 0)
    pixel_weight = weight.float()[target] * valid if weight is not None else valid.float()
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
            if want_grad:  # softmax - one_hot, times the pixel's weight over the averaging factor
                chunk.mul_(w_px * scale / norm)
                chunk.scatter_add_(0, tgt[None], (-w_px * scale)[None])
    return nll, correct


def upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                            ignore_index: int = 255, align_corners: bool = False, avg_non_ignore: bool = False,
                            chunk_elements: int = 2**20, private_ops: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``CrossEntropyLoss`` (softmax, ``reduction='mean'``, weight 1) of ``logits`` ``(B, K, h, w)`` resized
    bilinearly to ``labels`` ``(B, H, W)``, and the pixel accuracy (%), in ``chunk_elements``-sized pieces of one
    full-size buffer (see the module docstring); computed in float32. ``weight``: class weights ``(K,)``;
    ``avg_non_ignore``: the averaging factor (``densekit.models.losses.cross_entropy``). A pixel whose label ties
    for the largest logit counts as correct (argmax would pick the lowest tied class). ``private_ops=False``
    computes the resize's adjoint with public ops only."""
    if labels.dim() != 3 or logits.dim() != 4 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"expected logits (B, K, h, w) and labels (B, H, W), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return _UpsampledCrossEntropy.apply(logits, labels, weight, ignore_index, align_corners, avg_non_ignore,
                                        chunk_elements, private_ops)


@register
class FusedDecodeLoss(DecodeLoss):
    """``DecodeLoss`` that takes ``upsampled_cross_entropy`` where it applies (see the module docstring)."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = self._fusable_cross_entropy(logits, labels)
        if ce is None:
            return super().forward(logits, labels)
        loss, accuracy = upsampled_cross_entropy(logits, labels, ce.class_weight, self.ignore_index,
                                                 self.align_corners, ce.avg_non_ignore)
        return {ce.loss_name: ce.loss_weight * loss, "acc_seg": accuracy}

    def _fusable_cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> CrossEntropyLoss | None:
        """The stack's one softmax mean cross-entropy when the fused path applies to these tensors, else None."""
        if len(self.losses) != 1 or logits.device.type != "cpu" or logits.dim() != 4 or is_tracing():
            return None
        ce = self.losses[0]
        if type(ce) is not CrossEntropyLoss or ce.use_sigmoid or ce.reduction != "mean":
            return None
        (h, w), (height, width) = logits.shape[-2:], labels.shape[-2:]
        return ce if h <= height and w <= width and (h, w) != (height, width) else None
