"""Segmentation losses: the fused resize + cross-entropy against the plain path, SegLoss's choice of path."""
from __future__ import annotations

import pytest
import torch

from densekit.models.losses import (
    SegLoss,
    reference_upsampled_cross_entropy,
    upsampled_cross_entropy,
)


def _case(batch: int, classes: int, low: tuple[int, int], high: tuple[int, int], ignore_share: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, *low, generator=gen)
    labels = torch.randint(0, classes, (batch, *high), generator=gen)
    labels[torch.rand(batch, *high, generator=gen) < ignore_share] = 255
    return logits, labels


def _loss_acc_grad(fn, logits: torch.Tensor, labels: torch.Tensor, **kwargs):
    x = logits.clone().requires_grad_(True)
    loss, acc = fn(x, labels, **kwargs)
    (2.5 * loss).backward()  # a non-unit upstream gradient must be carried through
    return loss.detach(), acc, x.grad


@pytest.mark.parametrize(("batch", "classes", "low", "high", "align_corners", "weighted", "chunk"), [
    (2, 150, (32, 32), (128, 128), False, False, 2**14),
    (2, 7, (9, 13), (37, 50), False, True, 500),  # odd sizes, a chunk of a single row
    (1, 4, (5, 6), (20, 21), True, True, 2**20),  # align_corners, one chunk for everything
])
def test_fused_equals_plain_path(batch, classes, low, high, align_corners, weighted, chunk):
    logits, labels = _case(batch, classes, low, high, ignore_share=0.2)
    weight = torch.rand(classes, generator=torch.Generator().manual_seed(3)) + 0.5 if weighted else None
    kwargs = dict(weight=weight, ignore_index=255, align_corners=align_corners)
    loss, acc, grad = _loss_acc_grad(upsampled_cross_entropy, logits, labels, chunk_elements=chunk, **kwargs)
    ref_loss, ref_acc, ref_grad = _loss_acc_grad(reference_upsampled_cross_entropy, logits, labels, **kwargs)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert acc.item() == pytest.approx(ref_acc.item(), abs=1e-6)
    assert (grad - ref_grad).abs().max().item() < 1e-6 * ref_grad.abs().max().item() + 1e-9
    assert grad.abs().sum() > 0


def test_all_ignored_gives_nan_loss_and_zero_gradient_like_cross_entropy():
    logits, labels = _case(1, 3, (4, 4), (9, 9), ignore_share=1.0)
    loss, acc, grad = _loss_acc_grad(upsampled_cross_entropy, logits, labels)
    ref_loss, _, ref_grad = _loss_acc_grad(reference_upsampled_cross_entropy, logits, labels)
    assert torch.isnan(loss) and torch.isnan(ref_loss)
    assert acc.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad)) and torch.equal(ref_grad, torch.zeros_like(ref_grad))


def test_bf16_logits_under_autocast_get_a_bf16_gradient_close_to_fp32():
    logits, labels = _case(2, 10, (8, 8), (32, 32), ignore_share=0.1)
    x = logits.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = upsampled_cross_entropy(x, labels)
    (2.5 * loss).backward()
    ref_loss, _, ref_grad = _loss_acc_grad(reference_upsampled_cross_entropy, x.detach().float(), labels)
    assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    assert abs(loss.item() - ref_loss.item()) < 1e-5
    assert (x.grad.float() - ref_grad).abs().max().item() < 1e-2 * ref_grad.abs().max().item()


def test_no_gradient_wanted_leaves_nothing_saved():
    logits, labels = _case(1, 5, (4, 4), (16, 16), ignore_share=0.0)
    with torch.no_grad():
        loss, acc = upsampled_cross_entropy(logits, labels)
    ref_loss, ref_acc = reference_upsampled_cross_entropy(logits, labels)
    assert torch.allclose(loss, ref_loss) and acc == ref_acc


def test_bad_shapes_named():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(3, 8, 8\)"):
        upsampled_cross_entropy(torch.zeros(2, 3, 4, 4), torch.zeros(3, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("dice_weight", [0.0, 0.5])
def test_segloss_fused_and_plain_agree(dice_weight):
    logits, labels = _case(2, 6, (10, 10), (40, 40), ignore_share=0.1)
    results = []
    for fused in (True, False):
        x = logits.clone().requires_grad_(True)
        out = SegLoss(ce_weight=0.4, dice_weight=dice_weight, class_weight=[1, 2, 1, 1, 3, 1], fused=fused)(x, labels)
        sum(v for k, v in out.items() if k.startswith("loss")).backward()
        results.append((out, x.grad))
    (fused_out, fused_grad), (plain_out, plain_grad) = results
    assert fused_out.keys() == plain_out.keys()
    for key in fused_out:
        assert torch.allclose(fused_out[key], plain_out[key], rtol=1e-5), key
    assert (fused_grad - plain_grad).abs().max().item() < 1e-7
