"""Segmentation losses: mmsegmentation's loss types against the reference formulas (tests/seg_loss_reference.py)
on logits with ignored pixels (values, non-zero gradients, the ignore label honoured); the loss stack that
``loss_decode`` builds (a dict or a list, names summed, resize, acc_seg); refusals by name."""
from __future__ import annotations

import numpy as np
import pytest
import seg_loss_reference as ref
import torch
import torch.nn.functional as F

from densekit.models.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    SwinUnetDiceLoss,
    build_decode_loss,
)
from densekit.registry import MODELS

K = 5


def _case(batch: int = 2, classes: int = K, size: tuple[int, int] = (6, 7), ignore_share: float = 0.2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, classes, *size, generator=gen)
    labels = torch.randint(0, classes, (batch, *size), generator=gen)
    labels[torch.rand(batch, *size, generator=gen) < ignore_share] = 255
    return logits, labels


def _value_and_grad(fn, logits: torch.Tensor, labels: torch.Tensor):
    x = logits.clone().requires_grad_(True)
    value = fn(x, labels)
    value.backward()
    return value.detach(), x.grad


def _check(loss: torch.nn.Module, reference, ignored_grad_zero: bool = True, seed: int = 0):
    logits, labels = _case(seed=seed)
    assert (labels == 255).any() and (labels != 255).any()
    value, grad = _value_and_grad(lambda x, y: loss(x, y, 255), logits, labels)
    expected, expected_grad = _value_and_grad(reference, logits, labels)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)
    assert grad.abs().sum() > 0
    ignored = (labels == 255).unsqueeze(1).expand_as(grad)
    if ignored_grad_zero:  # an ignored pixel's logits do not move the loss
        assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    return value


# ------------------------------------------------------------------------------------------- cross-entropy
def test_plain_cross_entropy_averages_over_all_pixels_as_mmseg_default():
    """``dict(type='CrossEntropyLoss')`` as every recipe has it: avg_non_ignore=False, the sum over every pixel."""
    loss = MODELS.build(dict(type="CrossEntropyLoss", loss_weight=1.0))
    value = _check(loss, lambda x, y: ref.cross_entropy(x, y))
    logits, labels = _case()
    counted_mean = F.cross_entropy(logits, labels, ignore_index=255)  # densekit's old (PyTorch's) average
    assert value < counted_mean * 0.95


def test_cross_entropy_avg_non_ignore_is_pytorchs_mean():
    loss = CrossEntropyLoss(avg_non_ignore=True, loss_weight=0.4)
    _check(loss, lambda x, y: 0.4 * ref.cross_entropy(x, y, avg_non_ignore=True))
    logits, labels = _case()
    torch.testing.assert_close(loss(logits, labels, 255), 0.4 * F.cross_entropy(logits, labels, ignore_index=255))


@pytest.mark.parametrize("avg_non_ignore", [True, False])
def test_class_weighted_cross_entropy(avg_non_ignore):
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    loss = CrossEntropyLoss(class_weight=weights, avg_non_ignore=avg_non_ignore)
    _check(loss, lambda x, y: ref.cross_entropy(x, y, class_weight=weights, avg_non_ignore=avg_non_ignore))
    if avg_non_ignore:  # the counted pixels' weights: F.cross_entropy's weighted mean
        logits, labels = _case()
        expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights), ignore_index=255)
        torch.testing.assert_close(loss(logits, labels, 255), expected)


def test_cross_entropy_sum_reduction_and_all_ignored_crop():
    logits, labels = _case()
    torch.testing.assert_close(CrossEntropyLoss(reduction="sum")(logits, labels, 255),
                               ref.cross_entropy(logits, labels, reduction="sum"))
    labels[:] = 255
    value, grad = _value_and_grad(lambda x, y: CrossEntropyLoss(avg_non_ignore=True)(x, y, 255), logits, labels)
    assert value.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))  # mmseg's eps: 0, not NaN


def test_sigmoid_cross_entropy_for_a_one_class_head():
    logits, labels = _case(classes=1)
    labels = torch.where(labels == 255, 255, torch.randint(0, 2, labels.shape, generator=torch.Generator()))
    for avg_non_ignore in (False, True):
        loss = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=avg_non_ignore)
        value, grad = _value_and_grad(lambda x, y, loss=loss: loss(x, y, 255), logits, labels)
        expected = ref.binary_cross_entropy(logits, labels, avg_non_ignore=avg_non_ignore)
        torch.testing.assert_close(value, expected)
        assert grad.abs().sum() > 0 and torch.equal(grad[:, 0][labels == 255], torch.zeros((labels == 255).sum()))
    with pytest.raises(ValueError, match="must be 0 or 1"):
        CrossEntropyLoss(use_sigmoid=True)(logits, torch.full_like(labels, 2), 255)


# ---------------------------------------------------------------------------------------- Dice, focal, Lovasz
@pytest.mark.parametrize("kwargs", [dict(), dict(use_sigmoid=False), dict(naive_dice=True, eps=1.0)])
def test_dice_loss_is_mmsegs(kwargs):
    """mmseg 1.2.2's DiceLoss: an ignored pixel has no target, but its prediction stays in sum(p^2)."""
    loss = DiceLoss(loss_weight=0.5, **kwargs)
    _check(loss, lambda x, y: 0.5 * ref.dice(x, y, **kwargs), ignored_grad_zero=False)


def test_dice_loss_ignore_index_drops_a_class_channel():
    """DiceLoss's own ignore_index is a class left out of the sums, as in mmseg."""
    _check(DiceLoss(ignore_index=0), lambda x, y: ref.dice(x, y, drop_class=0), ignored_grad_zero=False)
    logits, labels = _case()
    assert DiceLoss(ignore_index=0)(logits, labels) != DiceLoss()(logits, labels)
    with pytest.raises(ValueError, match="only class"):
        DiceLoss(ignore_index=0)(logits[:, :1], labels.clamp(max=0))


@pytest.mark.parametrize("kwargs", [dict(), dict(gamma=1.5, alpha=0.25), dict(alpha=[0.1, 0.2, 0.3, 0.4, 0.5]),
                                    dict(class_weight=[1.0, 2.0, 0.5, 1.0, 3.0])])
def test_focal_loss_is_mmsegs_on_the_cpu(kwargs):
    """mmseg 1.2.2 crashes here on the CPU (target[:, num_classes]); densekit computes what its CUDA branch does."""
    _check(FocalLoss(**kwargs), lambda x, y: ref.focal(x, y, **kwargs))


def test_lovasz_softmax_is_the_reference_and_the_jaccard_loss_of_hard_predictions():
    _check(LovaszLoss(reduction="none"), lambda x, y: ref.lovasz_softmax(x, y))
    _check(LovaszLoss(reduction="none", classes=[1, 3], loss_weight=2.0),
           lambda x, y: 2.0 * ref.lovasz_softmax(x, y, classes=[1, 3]))
    logits, labels = _case()
    hard = 1e4 * logits  # one-hot probabilities: the Lovasz extension is the Jaccard loss itself
    torch.testing.assert_close(LovaszLoss(reduction="none")(hard, labels, 255),
                               ref.jaccard_loss_of_hard_predictions(hard, labels))


def test_lovasz_per_image_and_mmsegs_reduction_rule():
    logits, labels = _case()
    per_image = LovaszLoss(per_image=True)(logits, labels, 255)
    expected = torch.stack([ref.lovasz_softmax(x[None], y[None]) for x, y in zip(logits, labels)]).mean()
    torch.testing.assert_close(per_image, expected)
    with pytest.raises(ValueError, match="reduction='none'"):
        LovaszLoss()  # mmseg's rule: per_image=False needs reduction='none'
    with pytest.raises(ValueError, match="reduction='none'"):
        LovaszLoss(per_image=True, reduction="none")


def test_swin_unet_dice_is_the_official_formula_and_excludes_ignored_pixels():
    logits, labels = _case(ignore_share=0.0)
    torch.testing.assert_close(SwinUnetDiceLoss()(logits, labels, 255), ref.swin_unet_dice(logits, labels))

    def counted_only(x, y):  # the official formula over the counted pixels only
        keep = (y != 255).flatten()
        flat_x = x.permute(0, 2, 3, 1).reshape(1, -1, x.shape[1])[:, keep].permute(0, 2, 1).unsqueeze(-1)
        return 0.6 * ref.swin_unet_dice(flat_x, y.reshape(1, -1)[:, keep].unsqueeze(-1))

    _check(SwinUnetDiceLoss(loss_weight=0.6), counted_only)


# ------------------------------------------------------------------------------------- the loss stack
def test_a_list_of_two_losses_on_low_resolution_logits():
    logits, labels = _case(size=(5, 6))
    labels = F.interpolate(labels[:, None].float(), size=(20, 24), mode="nearest")[:, 0].long()
    stack = build_decode_loss([dict(type="CrossEntropyLoss", loss_weight=1.0),
                               dict(type="DiceLoss", loss_weight=3.0)], "decode_head.loss_decode", num_classes=K)
    x = logits.clone().requires_grad_(True)
    out = stack(x, labels)
    assert set(out) == {"loss_ce", "loss_dice", "acc_seg"}
    torch.testing.assert_close(out["loss_ce"], ref.resize_then(ref.cross_entropy, logits, labels))
    torch.testing.assert_close(out["loss_dice"], 3.0 * ref.resize_then(ref.dice, logits, labels))
    torch.testing.assert_close(out["acc_seg"], ref.resize_then(ref.accuracy, logits, labels))
    (out["loss_ce"] + out["loss_dice"]).backward()
    assert x.grad.abs().sum() > 0


def test_losses_with_the_same_name_are_summed_and_the_head_ignore_index_is_used():
    logits, labels = _case()
    labels[labels == 255] = 0  # class 0 becomes the ignore label of this head
    stack = build_decode_loss([dict(type="CrossEntropyLoss"), dict(type="FocalLoss", loss_name="loss_ce")],
                              "decode_head.loss_decode", num_classes=K, ignore_index=0)
    out = stack(logits, labels)
    expected = ref.cross_entropy(logits, labels, ignore_index=0) + ref.focal(logits, labels, ignore_index=0)
    assert set(out) == {"loss_ce", "acc_seg"}
    torch.testing.assert_close(out["loss_ce"], expected)


def test_default_is_mmsegs_cross_entropy():
    (loss,) = build_decode_loss(None, "decode_head.loss_decode", num_classes=K).losses
    assert isinstance(loss, CrossEntropyLoss) and not loss.avg_non_ignore and loss.loss_weight == 1.0


@pytest.mark.parametrize("loss_decode, message", [
    (dict(type="NoSuchLoss"), r"decode_head\.loss_decode\.type='NoSuchLoss'.*valid: CrossEntropyLoss, DiceLoss"),
    (dict(type="FocalLos"), "did you mean 'FocalLoss'"),
    ([dict(type="CrossEntropyLoss"), dict(type="DiceLoss", loss_wieght=1.0)],
     r"loss_decode\[1\]\.loss_wieght: DiceLoss has no argument .*did you mean 'loss_weight'"),
    (dict(type="CrossEntropyLoss", use_mask=True), "use_mask=True"),
    (dict(type="CrossEntropyLoss", reduction="none"), "reduction='none'"),
    (dict(type="CrossEntropyLoss", ignore_index=255), "ignore_index.*head config"),
    (dict(type="CrossEntropyLoss", use_sigmoid=True), "use_sigmoid=True.*one-class heads"),
    (dict(type="CrossEntropyLoss", class_weight=[1.0, 2.0]), "class_weight has 2 entries.*5 classes"),
    (dict(type="FocalLoss", use_sigmoid=False), "use_sigmoid=False"),
    (dict(type="LovaszLoss", loss_type="binary", reduction="none"), "loss_type='binary'.*one-class"),
    (dict(ce_weight=0.4, dice_weight=0.6), "needs a type.*ce_weight/dice_weight"),
    ([], "non-empty list"),
])
def test_bad_loss_decode_is_refused_by_name(loss_decode, message):
    with pytest.raises(ValueError, match=message):
        build_decode_loss(loss_decode, "decode_head.loss_decode", num_classes=K)


def test_class_weight_from_a_file(tmp_path):
    np.save(tmp_path / "w.npy", np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    (tmp_path / "w.json").write_text("[1, 2, 3, 4, 5]")
    for name in ("w.npy", "w.json"):
        loss = CrossEntropyLoss(class_weight=str(tmp_path / name))
        assert loss.class_weight.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="pickle"):
        CrossEntropyLoss(class_weight=str(tmp_path / "w.pkl"))
