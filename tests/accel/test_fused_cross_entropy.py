"""The fused CPU cross-entropy (densekit/accel/losses.py) against the plain path: resize, then mmseg's
cross-entropy (tests/seg_loss_reference.py), both averaging factors, class weights, the private adjoint and its
forced public fallback; and ``FusedDecodeLoss``, installed by ``accel.optimize``, against ``DecodeLoss``."""
from __future__ import annotations

import copy

import pytest
import seg_loss_reference as ref
import torch

from densekit import accel
from densekit.accel import losses as accel_losses
from densekit.accel.losses import (
    PRIVATE_ADJOINT,
    FusedDecodeLoss,
    bilinear_adjoint,
    detect_private_adjoint,
    public_bilinear_adjoint,
    upsampled_cross_entropy,
)
from densekit.models import EncoderDecoder
from densekit.models.losses import DecodeLoss, build_decode_loss


def _case(batch: int, classes: int, low: tuple[int, int], high: tuple[int, int], ignore_share: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, classes, *low, generator=gen)
    labels = torch.randint(0, classes, (batch, *high), generator=gen)
    labels[torch.rand(batch, *high, generator=gen) < ignore_share] = 255
    return logits, labels


def reference_upsampled_cross_entropy(logits, labels, weight=None, ignore_index=255, align_corners=False,
                                      avg_non_ignore=False):
    """The plain path: bilinear resize, then mmseg's cross-entropy; and mmseg's accuracy."""
    loss = ref.resize_then(ref.cross_entropy, logits, labels, align_corners=align_corners, class_weight=weight,
                           avg_non_ignore=avg_non_ignore, ignore_index=ignore_index)
    return loss, ref.resize_then(ref.accuracy, logits, labels, align_corners=align_corners, ignore_index=ignore_index)


def _loss_acc_grad(fn, logits: torch.Tensor, labels: torch.Tensor, **kwargs):
    x = logits.clone().requires_grad_(True)
    loss, acc = fn(x, labels, **kwargs)
    (2.5 * loss).backward()  # a non-unit upstream gradient must be carried through
    return loss.detach(), acc, x.grad


@pytest.mark.parametrize("private_ops", [True, False], ids=["private-adjoint", "public-fallback"])
@pytest.mark.parametrize("avg_non_ignore", [False, True], ids=["all-pixels", "counted-pixels"])
@pytest.mark.parametrize(("batch", "classes", "low", "high", "align_corners", "weighted", "chunk"), [
    (2, 150, (32, 32), (128, 128), False, False, 2**14),
    (2, 7, (9, 13), (37, 50), False, True, 500),  # odd sizes, a chunk of a single row
    (1, 4, (5, 6), (20, 21), True, True, 2**20),  # align_corners, one chunk for everything
])
def test_fused_equals_plain_path(batch, classes, low, high, align_corners, weighted, chunk, avg_non_ignore,
                                 private_ops):
    logits, labels = _case(batch, classes, low, high, ignore_share=0.2)
    weight = torch.rand(classes, generator=torch.Generator().manual_seed(3)) + 0.5 if weighted else None
    kwargs = dict(weight=weight, ignore_index=255, align_corners=align_corners, avg_non_ignore=avg_non_ignore)
    loss, acc, grad = _loss_acc_grad(upsampled_cross_entropy, logits, labels, chunk_elements=chunk,
                                     private_ops=private_ops, **kwargs)
    ref_loss, ref_acc, ref_grad = _loss_acc_grad(reference_upsampled_cross_entropy, logits, labels, **kwargs)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert acc.item() == pytest.approx(ref_acc.item(), abs=1e-6)
    assert (grad - ref_grad).abs().max().item() < 1e-6 * ref_grad.abs().max().item() + 1e-9
    assert grad.abs().sum() > 0


def test_private_adjoint_is_detected_and_equals_the_public_one():
    """This torch has aten's upsample_bilinear2d_backward; both adjoints give the same gradient."""
    assert PRIVATE_ADJOINT is not None
    grad = torch.randn(2, 3, 17, 29)
    for align_corners in (False, True):
        private = bilinear_adjoint(grad, (2, 3, 5, 8), align_corners, private_ops=True)
        public = bilinear_adjoint(grad, (2, 3, 5, 8), align_corners, private_ops=False)
        torch.testing.assert_close(private, public)
        torch.testing.assert_close(public, public_bilinear_adjoint(grad, (2, 3, 5, 8), align_corners))
        assert public.abs().sum() > 0


def test_a_torch_without_the_private_op_falls_back_to_the_public_adjoint(monkeypatch):
    """Detection answers None for an op this torch lacks; with no private op the fused stack still equals the plain
    one, through the public adjoint."""
    assert detect_private_adjoint("no_such_upsample_backward") is None
    monkeypatch.setattr(accel_losses, "PRIVATE_ADJOINT", None)
    calls = []

    def counted(*args):
        calls.append(args[1])
        return public_bilinear_adjoint(*args)

    monkeypatch.setattr(accel_losses, "public_bilinear_adjoint", counted)
    loss_decode = dict(type="CrossEntropyLoss", avg_non_ignore=True, class_weight=[1, 2, 1, 1, 3, 1])
    logits, labels = _case(2, 6, (10, 10), (40, 40), ignore_share=0.1)
    plain = build_decode_loss(loss_decode, "decode_head.loss_decode", num_classes=6)
    fused_out, fused_grad = _stack_outputs(accel.optimize(copy.deepcopy(plain)), logits, labels)
    plain_out, plain_grad = _stack_outputs(plain, logits, labels)
    assert calls == [(2, 6, 10, 10)]
    assert torch.allclose(fused_out["loss_ce"], plain_out["loss_ce"], rtol=1e-5)
    assert (fused_grad - plain_grad).abs().max().item() < 1e-7 and fused_grad.abs().sum() > 0


@pytest.mark.parametrize("private_ops", [True, False])
def test_all_ignored_gives_zero_loss_and_gradient_as_mmseg(private_ops):
    """mmseg divides by avg_factor + eps: a crop of ignored pixels gives 0 (F.cross_entropy's mean is NaN)."""
    logits, labels = _case(1, 3, (4, 4), (9, 9), ignore_share=1.0)
    loss, acc, grad = _loss_acc_grad(upsampled_cross_entropy, logits, labels, avg_non_ignore=True,
                                     private_ops=private_ops)
    ref_loss, _, ref_grad = _loss_acc_grad(reference_upsampled_cross_entropy, logits, labels, avg_non_ignore=True)
    assert loss.item() == ref_loss.item() == 0.0
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


# ------------------------------------------------------------------------------ FusedDecodeLoss
def _stack_outputs(stack: DecodeLoss, logits: torch.Tensor, labels: torch.Tensor):
    x = logits.clone().requires_grad_(True)
    out = stack(x, labels)
    sum(v for k, v in out.items() if k.startswith("loss")).backward()
    return out, x.grad


@pytest.mark.parametrize("loss_decode", [
    dict(type="CrossEntropyLoss", loss_weight=0.4),
    dict(type="CrossEntropyLoss", avg_non_ignore=True, class_weight=[1, 2, 1, 1, 3, 1]),
    dict(type="CrossEntropyLoss", class_weight=[1, 2, 1, 1, 3, 1], loss_name="loss_seg"),
    [dict(type="CrossEntropyLoss"), dict(type="DiceLoss")],  # not fusable: the plain path runs
])
def test_fused_stack_equals_the_plain_stack(loss_decode):
    logits, labels = _case(2, 6, (10, 10), (40, 40), ignore_share=0.1)
    plain = build_decode_loss(loss_decode, "decode_head.loss_decode", num_classes=6)
    fused = accel.optimize(copy.deepcopy(plain))
    assert type(fused) is FusedDecodeLoss and type(plain) is DecodeLoss
    fused_out, fused_grad = _stack_outputs(fused, logits, labels)
    plain_out, plain_grad = _stack_outputs(plain, logits, labels)
    assert fused_out.keys() == plain_out.keys()
    for key in fused_out:
        assert torch.allclose(fused_out[key], plain_out[key], rtol=1e-5), key
    assert (fused_grad - plain_grad).abs().max().item() < 1e-7
    assert fused_grad.abs().sum() > 0


def test_fused_stack_takes_the_fused_path_only_where_it_applies():
    stack = accel.optimize(build_decode_loss(dict(type="CrossEntropyLoss"), "decode_head.loss_decode", num_classes=3))
    logits, labels = _case(1, 3, (5, 5), (20, 20), ignore_share=0.1)
    assert stack._fusable_cross_entropy(logits, labels) is stack.losses[0]
    assert stack._fusable_cross_entropy(logits, labels[:, :5, :5]) is None  # same size: nothing to fuse
    assert stack._fusable_cross_entropy(logits, labels[:, :4, :4]) is None  # labels smaller than the logits
    stack.losses[0].reduction = "sum"
    assert stack._fusable_cross_entropy(logits, labels) is None


def test_optimize_installs_the_fused_loss_on_a_segmentor_and_restore_removes_it():
    cfg = dict(backbone=dict(type="resnet18"),
               decode_head=dict(type="UPerHead", in_channels=[64, 128, 256, 512], channels=16, num_classes=4,
                                norm="BN"),
               auxiliary_head=dict(type="FCNHead", in_channels=256, in_index=2, channels=8, num_classes=4, norm="BN",
                                   loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)))
    torch.manual_seed(0)
    model = EncoderDecoder(**cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    labels = torch.randint(0, 4, (1, 64, 64))
    plain = {k: v.item() for k, v in model.decode_loss(model._forward(x), labels).items()}
    accel.optimize(model)
    assert type(model.decode_loss) is FusedDecodeLoss and type(model.aux_loss) is FusedDecodeLoss
    fused = {k: v.item() for k, v in model.decode_loss(model._forward(x), labels).items()}
    assert plain.keys() == fused.keys() and all(fused[k] == pytest.approx(plain[k], rel=1e-5) for k in plain)
    accel.restore(model)
    assert type(model.decode_loss) is DecodeLoss and not accel.is_optimized(model)
