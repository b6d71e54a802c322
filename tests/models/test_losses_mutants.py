"""Segmentation losses, the cases tests/models/test_losses.py leaves open: the other reductions and options
(``'sum'``, ``classes='all'``, absent classes, class weights in Lovasz, the binary Lovasz hinge, sigmoid
cross-entropy's ``pos_weight``, Dice's ``activate``/``eps``/channel rules, the Swin-Unet ``smooth``), mmseg's
``+ eps`` in the averages, the default ignore label 255 of every ``forward``, the loss stack's resize and accuracy
options, loss names, checkpoints without loss buffers, and the refusals' messages. Each value is held to
mmsegmentation's documented definition (tests/seg_loss_reference.py, or a hand formula here)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import seg_loss_reference as ref
import torch
import torch.nn.functional as F

from densekit.models.losses import (
    CrossEntropyLoss,
    DecodeLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    SwinUnetDiceLoss,
    build_decode_loss,
)

K = 5
WHERE = "decode_head.loss_decode"


def _case(batch: int = 2, classes: int = K, size: tuple[int, int] = (6, 7), ignore_share: float = 0.2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, classes, *size, generator=gen)
    labels = torch.randint(0, classes, (batch, *size), generator=gen)
    labels[torch.rand(batch, *size, generator=gen) < ignore_share] = 255
    return logits, labels


def _binary_case(seed: int = 0):
    """One-class logits ``(2, 1, 6, 7)`` and 0/1 labels with ignored pixels."""
    logits, labels = _case(classes=1, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    labels = torch.where(labels == 255, 255, torch.randint(0, 2, labels.shape, generator=gen))
    assert (labels == 0).any() and (labels == 1).any() and (labels == 255).any()
    return logits, labels


# ------------------------------------------------------------------------------ the default ignore label 255
def test_every_loss_ignores_label_255_when_the_caller_names_no_ignore_index():
    """mmseg's default ignore label is 255; each loss's ``forward`` has it as its default too."""
    logits, labels = _case()
    torch.testing.assert_close(CrossEntropyLoss()(logits, labels), ref.cross_entropy(logits, labels))
    torch.testing.assert_close(FocalLoss()(logits, labels), ref.focal(logits, labels))
    torch.testing.assert_close(LovaszLoss(reduction="none")(logits, labels), ref.lovasz_softmax(logits, labels))
    keep = (labels != 255).flatten()  # Swin-Unet's formula over the counted pixels only
    flat_x = logits.permute(0, 2, 3, 1).reshape(1, -1, K)[:, keep].permute(0, 2, 1).unsqueeze(-1)
    torch.testing.assert_close(SwinUnetDiceLoss()(logits, labels),
                               ref.swin_unet_dice(flat_x, labels.reshape(1, -1)[:, keep].unsqueeze(-1)))


# ------------------------------------------------------------------------------------------- cross-entropy
def test_cross_entropy_adds_mmsegs_eps_to_a_small_class_weight_sum():
    """The average divides by ``sum of weights + eps`` (eps = float32 eps): with one counted pixel of weight 1e-6,
    the eps is a tenth of the divisor."""
    logits, labels = _case()
    labels[:] = 255
    labels[0, 0, 0] = 0
    weights = [1e-6, 1.0, 1.0, 1.0, 1.0]
    value = CrossEntropyLoss(class_weight=weights, avg_non_ignore=True)(logits, labels, 255)
    nll = -F.log_softmax(logits[0, :, 0, 0], 0)[0]
    torch.testing.assert_close(value, 1e-6 * nll / (1e-6 + ref.EPS), rtol=1e-5, atol=0)


def test_class_weighted_cross_entropy_takes_float64_logits():
    """Float64 logits (gradient checks) work with float32 class weights: the weights follow the logits' dtype."""
    logits, labels = _case()
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    value = CrossEntropyLoss(class_weight=weights)(logits.double(), labels, 255)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, ref.cross_entropy(logits.double(), labels, class_weight=weights))


def test_sigmoid_cross_entropy_class_weight_is_the_positive_weight():
    """With ``use_sigmoid``, mmseg passes ``class_weight`` as ``pos_weight``: the positive term is scaled by it."""
    logits, labels = _binary_case()
    valid = (labels != 255).float()
    x, t = logits[:, 0], (labels * (labels != 255)).float()
    per_pixel = -(3.0 * t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)) * valid
    torch.testing.assert_close(CrossEntropyLoss(use_sigmoid=True, class_weight=[3.0])(logits, labels, 255),
                               per_pixel.mean())
    torch.testing.assert_close(CrossEntropyLoss(use_sigmoid=True, reduction="sum")(logits, labels, 255),
                               (-(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x)) * valid).sum())


def test_sigmoid_cross_entropy_avg_non_ignore_adds_mmsegs_eps():
    """``avg_non_ignore``: the counted sum over ``count + eps``; with one counted pixel the eps shows in float64."""
    logits, labels = _binary_case()
    labels[:] = 255
    labels[1, 2, 3] = 1
    x = logits.double()
    value = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=True)(x, labels, 255)
    expected = -F.logsigmoid(x[1, 0, 2, 3]) / (1 + ref.EPS)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------------- Dice
def test_dice_sum_reduction_adds_the_images():
    logits, labels = _case()
    torch.testing.assert_close(DiceLoss(reduction="sum")(logits, labels), 2 * ref.dice(logits, labels))


def test_dice_eps_appears_twice_in_the_denominator():
    """mmseg's (non-naive) Dice: ``2a / (sum(p^2) + eps + sum(y^2) + eps)``, with an eps large enough to matter."""
    logits, labels = _case()
    torch.testing.assert_close(DiceLoss(eps=1.0)(logits, labels), ref.dice(logits, labels, eps=1.0))


def test_dice_without_activation_takes_the_given_probabilities():
    """``activate=False``: the inputs are the probabilities (== the sigmoid of their logit)."""
    logits, labels = _case()
    probs = logits.sigmoid()
    torch.testing.assert_close(DiceLoss(activate=False)(probs, labels), ref.dice(torch.logit(probs), labels))


def test_dice_softmax_applies_to_two_classes_but_not_to_one():
    """mmseg: with ``use_sigmoid=False`` the softmax is skipped for one channel (it would be constant 1)."""
    logits, labels = _case(classes=2)
    torch.testing.assert_close(DiceLoss(use_sigmoid=False)(logits, labels),
                               ref.dice(logits, labels, use_sigmoid=False))
    probs = logits[:, :1].sigmoid()
    one_class = labels.clamp(max=0).masked_fill(labels == 255, 255)
    torch.testing.assert_close(DiceLoss(use_sigmoid=False)(probs, one_class),
                               ref.dice(torch.logit(probs), one_class))


def test_dice_ignore_index_none_and_the_last_channel():
    """``ignore_index=None`` keeps every channel; dropping the last channel drops its labels too."""
    logits, labels = _case()
    torch.testing.assert_close(DiceLoss(ignore_index=None)(logits, labels), ref.dice(logits, labels))
    torch.testing.assert_close(DiceLoss(ignore_index=K - 1)(logits, labels),
                               ref.dice(logits, labels, drop_class=K - 1))


def test_dice_label_equal_to_the_class_count_has_no_target():
    """mmseg one-hots ``clamp(label, 0, K)`` into ``K + 1`` columns and keeps ``K``: label ``K`` hits no class."""
    logits, labels = _case()
    labels[0, :2] = K
    torch.testing.assert_close(DiceLoss()(logits, labels), ref.dice(logits, labels))


def test_dice_default_ignore_index_drops_channel_255_of_a_wide_head():
    """mmseg's default ``ignore_index=255`` is a class channel: a head of 256 classes loses channel 255."""
    logits, labels = _case(batch=1, classes=256, size=(2, 3), ignore_share=0.0)
    labels[0, 0, 0] = 255
    torch.testing.assert_close(DiceLoss()(logits, labels), ref.dice(logits, labels, drop_class=255))


def test_swin_unet_dice_smooth_in_numerator_and_denominator():
    logits, labels = _case(ignore_share=0.0)
    torch.testing.assert_close(SwinUnetDiceLoss(smooth=1.0)(logits, labels, 255),
                               ref.swin_unet_dice(logits, labels, smooth=1.0))


# ------------------------------------------------------------------------------------------------ focal
def test_focal_sum_reduction_adds_every_term():
    logits, labels = _case()
    torch.testing.assert_close(FocalLoss(reduction="sum")(logits, labels, 255),
                               ref.focal(logits, labels) * labels.numel() * K)


def test_focal_one_class_head_takes_label_1_as_positive():
    """mmseg's CUDA branch on a ``(B, 1, H, W)`` head: t = [label == 1] (label 0 is the background)."""
    logits, labels = _binary_case()
    x, valid = logits[:, 0], (labels != 255).float()
    t, p = (labels == 1).float(), x.sigmoid()
    bce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    terms = bce * 0.5 * ((1 - p) * t + p * (1 - t)) ** 2 * valid  # alpha 0.5 weighs both terms alike
    torch.testing.assert_close(FocalLoss()(logits, labels, 255), terms.mean())


def test_focal_two_class_head_is_per_class():
    logits, labels = _case(classes=2)
    torch.testing.assert_close(FocalLoss(alpha=0.25)(logits, labels, 255), ref.focal(logits, labels, alpha=0.25))


# ----------------------------------------------------------------------------------------------- Lovasz
def test_lovasz_present_skips_absent_classes_and_all_counts_them():
    """'present': the mean over the classes in the counted labels; 'all': over every class, an absent one
    adding its largest error. Classes 0 and 2 are absent here."""
    logits, labels = _case()
    labels = torch.where(labels == 0, 1, torch.where(labels == 2, 3, labels))
    for classes in ("present", "all"):
        loss = LovaszLoss(classes=classes, reduction="none")
        torch.testing.assert_close(loss(logits, labels, 255), ref.lovasz_softmax(logits, labels, classes=classes))
    assert LovaszLoss(classes="all", per_image=True)(logits, labels, 255) != \
        LovaszLoss(classes="present", per_image=True)(logits, labels, 255)


def test_lovasz_class_weight_scales_each_class():
    """mmseg: each class's loss times ``class_weight[c]``, then the mean over the classes."""
    logits, labels = _case()
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    present = labels[labels != 255].unique().tolist()
    expected = torch.stack([weights[c] * ref.lovasz_softmax(logits, labels, classes=[c]) for c in present]).mean()
    torch.testing.assert_close(LovaszLoss(class_weight=weights, reduction="none")(logits, labels, 255), expected)


def test_lovasz_per_image_sum_adds_the_images():
    logits, labels = _case()
    expected = sum(ref.lovasz_softmax(x[None], y[None]) for x, y in zip(logits, labels))
    torch.testing.assert_close(LovaszLoss(per_image=True, reduction="sum")(logits, labels, 255), expected)


def test_lovasz_batch_without_counted_pixels_is_zero_with_zero_gradient():
    logits, labels = _case()
    labels[:] = 255
    x = logits.clone().requires_grad_(True)
    value = LovaszLoss(reduction="none")(x, labels, 255)
    value.backward()
    assert value.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x.grad))


def test_binary_lovasz_on_one_counted_pixel_and_on_none():
    """One counted pixel: its hinge ``relu(1 - x (2y - 1))`` (the Jaccard increment of a single pixel is 1); every
    pixel ignored: 0, not NaN."""
    loss = LovaszLoss(loss_type="binary", reduction="none")
    logits = torch.tensor([[[[0.3, -2.0]]]])
    labels = torch.tensor([[[1, 255]]])
    torch.testing.assert_close(loss(logits, labels, 255), torch.tensor(0.7))
    empty = loss(logits, torch.full_like(labels, 255), 255)
    assert empty.item() == 0.0


def test_binary_lovasz_is_the_lovasz_hinge():
    logits, labels = _binary_case()
    loss = LovaszLoss(loss_type="binary", reduction="none", loss_weight=0.5)
    torch.testing.assert_close(loss(logits, labels, 255), 0.5 * ref.lovasz_hinge(logits, labels))
    with pytest.raises(ValueError, match=re.escape("is for one-class heads (B, 1, H, W), got logits (2, 2, 6, 7)")):
        LovaszLoss(loss_type="binary", reduction="none")(torch.zeros(2, 2, 6, 7), labels, 255)


# ----------------------------------------------------------------------------------------- the loss stack
def test_stack_defaults_are_mmsegs_ignore_255_and_align_corners_false():
    logits, labels = _case(size=(5, 6))
    labels = F.interpolate(labels[:, None].float(), size=(20, 24), mode="nearest")[:, 0].long()
    out = DecodeLoss([CrossEntropyLoss()])(logits, labels)
    torch.testing.assert_close(out["loss_ce"], ref.resize_then(ref.cross_entropy, logits, labels))
    torch.testing.assert_close(out["acc_seg"], ref.resize_then(ref.accuracy, logits, labels))


def test_stack_resizes_with_the_models_align_corners():
    logits, labels = _case(size=(5, 6))
    labels = F.interpolate(labels[:, None].float(), size=(20, 24), mode="nearest")[:, 0].long()
    stack = build_decode_loss(dict(type="CrossEntropyLoss"), WHERE, num_classes=K, align_corners=True)
    expected = ref.resize_then(ref.cross_entropy, logits, labels, align_corners=True)
    torch.testing.assert_close(stack(logits, labels)["loss_ce"], expected)
    assert not torch.allclose(expected, ref.resize_then(ref.cross_entropy, logits, labels))


def test_stack_accuracy_uses_the_head_ignore_index():
    logits, labels = _case()
    labels[labels == 255] = 0
    stack = build_decode_loss(dict(type="CrossEntropyLoss"), WHERE, num_classes=K, ignore_index=0)
    torch.testing.assert_close(stack(logits, labels)["acc_seg"], ref.accuracy(logits, labels, ignore_index=0))


def test_default_loss_names_are_mmsegs():
    logits, labels = _case()
    stack = build_decode_loss([dict(type="CrossEntropyLoss"), dict(type="FocalLoss"), dict(type="DiceLoss"),
                               dict(type="LovaszLoss", reduction="none")], WHERE, num_classes=K)
    assert set(stack(logits, labels)) == {"loss_ce", "loss_focal", "loss_dice", "loss_lovasz", "acc_seg"}
    assert set(build_decode_loss(dict(type="SwinUnetDiceLoss"), WHERE, num_classes=K)(logits, labels)) == \
        {"loss_dice", "acc_seg"}
    named = build_decode_loss(dict(type="SwinUnetDiceLoss", loss_name="loss_swin"), WHERE, num_classes=K)
    assert set(named(logits, labels)) == {"loss_swin", "acc_seg"}


def test_loss_buffers_stay_out_of_checkpoints():
    """Class weights and alpha are config, not state: mmseg checkpoints have no loss keys, so a model's
    state_dict must not gain any (a strict load of an mmseg checkpoint would miss them)."""
    weights = [0.5, 2.0, 1.0, 3.0, 0.25]
    for loss in (CrossEntropyLoss(class_weight=weights), FocalLoss(alpha=weights, class_weight=weights),
                 LovaszLoss(class_weight=weights, reduction="none")):
        assert loss.state_dict() == {}


def test_built_loss_does_not_share_the_configs_weight_tensor():
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    (loss,) = build_decode_loss(dict(type="CrossEntropyLoss", class_weight=weights), WHERE, num_classes=K).losses
    weights[0] = 100.0
    assert loss.class_weight[0] == 0.5


# ------------------------------------------------------------------------------------------ class weights
def test_class_weight_from_yaml_files_is_float32(tmp_path):
    for name in ("w.yaml", "w.yml", "w.json"):
        (tmp_path / name).write_text("[1, 2, 3, 4, 5]")
        weight = CrossEntropyLoss(class_weight=str(tmp_path / name)).class_weight
        assert weight.dtype == torch.float32 and weight.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_class_weight_npy_holding_pickled_objects_is_refused(tmp_path):
    """A .npy file is read with ``allow_pickle=False``: an object array (pickled) does not load."""
    np.save(tmp_path / "w.npy", np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        CrossEntropyLoss(class_weight=str(tmp_path / "w.npy"))
    with pytest.raises(ValueError, match=re.escape("w.pkl' must be a list or a .npy, .json or .yaml file "
                                                   "(pickle files are not read)") + "$"):
        CrossEntropyLoss(class_weight=str(tmp_path / "w.pkl"))


@pytest.mark.parametrize("make, owner", [
    (lambda w: CrossEntropyLoss(class_weight=w), "CrossEntropyLoss"),
    (lambda w: FocalLoss(class_weight=w), "FocalLoss"),
    (lambda w: LovaszLoss(class_weight=w, reduction="none"), "LovaszLoss"),
])
def test_class_weight_of_wrong_shape_is_refused_naming_the_loss(make, owner):
    with pytest.raises(ValueError, match=re.escape(f"{owner}: class_weight must be one weight per class, "
                                                   "got shape (2, 2)")):
        make([[1.0, 2.0], [3.0, 4.0]])


# ------------------------------------------------------------------------------------- refusals by name
@pytest.mark.parametrize("make, owner", [
    (lambda r: CrossEntropyLoss(reduction=r), "CrossEntropyLoss"),
    (lambda r: FocalLoss(reduction=r), "FocalLoss"),
    (lambda r: DiceLoss(reduction=r), "DiceLoss"),
    (lambda r: LovaszLoss(per_image=True, reduction=r), re.escape("LovaszLoss(per_image=True)")),
])
def test_bad_reduction_is_refused_naming_the_loss(make, owner):
    with pytest.raises(ValueError, match=f"^{owner}: reduction must be 'mean' or 'sum', got 'avg'$"):
        make("avg")
    with pytest.raises(ValueError, match=f"^{owner}: reduction='none' .*must be one number; use 'mean' or 'sum'$"):
        make("none")


def test_lovasz_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="^LovaszLoss: loss_type must be 'binary' or 'multi_class', got 'hinge'$"):
        LovaszLoss(loss_type="hinge", reduction="none")
    for classes in ([1.5], 3, None):
        with pytest.raises(ValueError, match=re.escape("classes must be 'all', 'present' or a list of class ids, "
                                                       f"got {classes!r}")):
            LovaszLoss(classes=classes, reduction="none")
    with pytest.raises(ValueError, match="mmsegmentation requires reduction='none' there"):
        LovaszLoss(reduction="mean")


def test_sigmoid_cross_entropy_refusals_name_the_shape_and_label():
    logits, labels = _binary_case()
    with pytest.raises(ValueError, match=re.escape("for one-class heads (B, 1, H, W), got logits (2, 2, 6, 7)")):
        CrossEntropyLoss(use_sigmoid=True)(torch.zeros(2, 2, 6, 7), labels, 255)
    with pytest.raises(ValueError, match=re.escape("CrossEntropyLoss(use_sigmoid=True): a one-class head's labels "
                                                   "must be 0 or 1 (or the ignore index 255), got 2")):
        CrossEntropyLoss(use_sigmoid=True)(logits, torch.full_like(labels, 2), 255)


def test_unsupported_modes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="^CrossEntropyLoss: use_mask=True .*is not supported: densekit's "
                                         "segmentation heads predict one map per class$"):
        CrossEntropyLoss(use_mask=True)
    with pytest.raises(ValueError, match=re.escape("FocalLoss: use_sigmoid=False is not supported (mmsegmentation "
                                                   "implements only the sigmoid focal loss)")):
        FocalLoss(use_sigmoid=False)


@pytest.mark.parametrize("loss_decode, num_classes, message", [
    ([dict(type="CrossEntropyLoss"), "DiceLoss"], K, r"^decode_head\.loss_decode\[1\] must be a dict\(type=\.\.\.\), "
                                                     r"got 'DiceLoss'$"),
    (dict(loss_weight=1.0), K, r"^decode_head\.loss_decode needs a type \(one of CrossEntropyLoss, DiceLoss, "
                               r"FocalLoss, LovaszLoss, SwinUnetDiceLoss\), got \{'loss_weight': 1\.0\}$"),
    (dict(ce_weight=0.4), K, re.escape(" (densekit's former ce_weight/dice_weight keys are now a list of typed "
                                       "losses, e.g. [dict(type='CrossEntropyLoss', loss_weight=0.4), "
                                       "dict(type='SwinUnetDiceLoss', loss_weight=0.6)])") + "$"),
    (dict(dice_weight=0.6), K, "ce_weight/dice_weight keys are now a list"),
    (dict(type="CrossEntropyLoss", ignore_index=255), K,
     r"^decode_head\.loss_decode\.ignore_index: CrossEntropyLoss takes no ignore_index; the ignore label is the "
     r"head's \(set ignore_index in the head config, as in mmsegmentation\)$"),
    (dict(type="DiceLoss", zzz=1), K, r"^decode_head\.loss_decode\.zzz: DiceLoss has no argument 'zzz' \(valid: "
                                      r"use_sigmoid, activate, reduction, naive_dice, loss_weight, ignore_index, eps, "
                                      r"loss_name\)$"),
    (dict(type="CrossEntropyLoss", use_sigmoid=True), K,
     r"^decode_head\.loss_decode: use_sigmoid=True is mmsegmentation's binary path"),
    (dict(type="LovaszLoss", loss_type="binary", reduction="none"), K,
     r"^decode_head\.loss_decode: loss_type='binary' is mmsegmentation's binary path"),
    (dict(type="CrossEntropyLoss"), 1, r"needs use_sigmoid=True \(a softmax over one class is constant\)$"),
    (dict(type="FocalLoss", alpha=[0.25, 0.75]), K, r"^decode_head\.loss_decode\.alpha has 2 entries for a head of 5 "
                                                    r"classes$"),
])
def test_bad_loss_decode_messages(loss_decode, num_classes, message):
    with pytest.raises(ValueError, match=message) as err:
        build_decode_loss(loss_decode, WHERE, num_classes=num_classes)
    if isinstance(loss_decode, dict) and not {"ce_weight", "dice_weight"} & set(loss_decode):
        assert "former" not in str(err.value)
