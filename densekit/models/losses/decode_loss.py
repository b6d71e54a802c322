"""A head's loss stack, built from its ``loss_decode`` (mmsegmentation's ``BaseDecodeHead.loss_by_feat``).

``loss_decode`` is one ``dict(type=...)`` or a list of them, of the types in ``LOSS_TYPES``. The stack resizes the
head's logits bilinearly to the label size (with the model's ``align_corners``), runs each loss with the head's
``ignore_index``, sums the losses that share a ``loss_name``, and adds the pixel accuracy ``acc_seg``. Any other
type, a key a loss does not take, or a loss that cannot work with the head's classes is refused by name.

``densekit.accel`` replaces ``DecodeLoss`` on the CPU with a subclass that fuses the resize into a single
cross-entropy (``densekit/accel/losses.py``); this plain path is the reference it is held to.
"""
from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cross_entropy import CrossEntropyLoss
from .dice import DiceLoss, SwinUnetDiceLoss
from .focal import FocalLoss
from .lovasz import LovaszLoss

LOSS_TYPES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (CrossEntropyLoss, DiceLoss, FocalLoss, LovaszLoss, SwinUnetDiceLoss)}
# mmseg's default ``loss_decode`` of a decode head.
DEFAULT_LOSS_DECODE = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
# mmseg's decode-head threshold for one-channel (sigmoid) heads: a pixel is foreground above it.
BINARY_THRESHOLD = 0.3


@torch.no_grad()
def predict_labels(logits: torch.Tensor, probabilities: bool = False) -> torch.Tensor:
    """``(B, K, H, W)`` logits (or probabilities) -> ``(B, H, W)`` labels: the arg-max class, or for one channel
    ``sigmoid > BINARY_THRESHOLD`` (mmseg's binary heads)."""
    if logits.shape[1] > 1:
        return logits.argmax(1)
    probs = logits[:, 0] if probabilities else logits[:, 0].sigmoid()
    return (probs > BINARY_THRESHOLD).long()


@torch.no_grad()
def pixel_accuracy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Percentage of counted pixels predicted right; ``(B, K, H, W)`` logits and ``(B, H, W)`` labels."""
    valid = labels != ignore_index
    correct = (predict_labels(logits) == labels) & valid
    return 100.0 * correct.sum() / valid.sum().clamp(min=1)


class DecodeLoss(nn.Module):
    """The losses of one head: ``forward(logits, labels) -> {loss_name: loss, ..., 'acc_seg': accuracy}``.

    Args:
        losses: the loss modules, each ``loss(logits, labels, ignore_index) -> 0-dim`` with a ``loss_name``.
        ignore_index: the label value that counts for nothing (the head's, mmseg's ``decode_head.ignore_index``).
        align_corners: for the bilinear resize of the logits to the label size.
    """

    def __init__(self, losses: Sequence[nn.Module], ignore_index: int = 255, align_corners: bool = False) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.ignore_index = ignore_index
        self.align_corners = align_corners

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, align_corners={self.align_corners}"

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, K, h, w)`` logits and ``(B, H, W)`` long labels -> the loss dict (0-dim tensors)."""
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        out: dict[str, torch.Tensor] = {}
        for loss in self.losses:
            value = loss(logits, labels, self.ignore_index)
            out[loss.loss_name] = out[loss.loss_name] + value if loss.loss_name in out else value
        out["acc_seg"] = pixel_accuracy(logits, labels, self.ignore_index)
        return out


def pop_loss_keys(head_cfg: dict) -> tuple[dict | list | None, int]:
    """Take ``loss_decode`` and ``ignore_index`` (default 255) out of a head config: mmseg keeps both in the head's
    config, densekit's heads only predict."""
    return head_cfg.pop("loss_decode", None), head_cfg.pop("ignore_index", 255)


def build_decode_loss(loss_decode: Mapping | Sequence[Mapping] | None, where: str, num_classes: int,
                      ignore_index: int = 255, align_corners: bool = False,
                      default: Mapping | Sequence[Mapping] = DEFAULT_LOSS_DECODE) -> DecodeLoss:
    """The head's ``DecodeLoss`` from its ``loss_decode`` (a dict, a list of dicts, or None for ``default``).

    ``where`` (e.g. ``'decode_head.loss_decode'``) names the config key in errors; ``num_classes`` is the head's
    ``K``, against which class weights and the sigmoid/one-class choices are checked.
    """
    items = _items(default if loss_decode is None else loss_decode, where)
    losses = [_build_loss(cfg, name) for name, cfg in items]
    for (name, _), loss in zip(items, losses):
        _check_classes(loss, name, num_classes)
    return DecodeLoss(losses, ignore_index=ignore_index, align_corners=align_corners)


def check_loss_decode(loss_decode: object, where: str = "loss_decode") -> None:
    """Raise ValueError naming the key where ``build_decode_loss`` would refuse ``loss_decode`` for its types or
    arguments (the config check calls this before the Runner starts; the checks against the head's number of
    classes need the head and run when it is built)."""
    for name, cfg in _items(loss_decode, where):
        _build_loss(cfg, name)


def _items(loss_decode: object, where: str) -> list[tuple[str, object]]:
    """``[(key, one loss's dict), ...]`` of a dict or a non-empty list of dicts."""
    if isinstance(loss_decode, Mapping):
        return [(where, loss_decode)]
    if isinstance(loss_decode, Sequence) and not isinstance(loss_decode, str) and loss_decode:
        return [(f"{where}[{i}]", cfg) for i, cfg in enumerate(loss_decode)]
    raise ValueError(f"{where} must be a dict(type=...) or a non-empty list of them, got {loss_decode!r}")


def _build_loss(cfg: Mapping, where: str) -> nn.Module:
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where} must be a dict(type=...), got {cfg!r}")
    cfg = copy.deepcopy(dict(cfg))
    kind = cfg.pop("type", None)
    if kind is None:
        old = " (densekit's former ce_weight/dice_weight keys are now a list of typed losses, e.g. " \
              "[dict(type='CrossEntropyLoss', loss_weight=0.4), dict(type='SwinUnetDiceLoss', loss_weight=0.6)])" \
            if {"ce_weight", "dice_weight"} & set(cfg) else ""
        raise ValueError(f"{where} needs a type (one of {', '.join(LOSS_TYPES)}), got {dict(cfg)}{old}")
    cls = LOSS_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"{where}.type={kind!r} is not a loss densekit implements{_nearest(kind, LOSS_TYPES)} "
                         f"(valid: {', '.join(LOSS_TYPES)})")
    valid = [name for name in inspect.signature(cls).parameters]
    for key in cfg:
        if key == "ignore_index" and key not in valid:
            raise ValueError(f"{where}.ignore_index: {kind} takes no ignore_index; the ignore label is the head's "
                             "(set ignore_index in the head config, as in mmsegmentation)")
        if key not in valid:
            raise ValueError(f"{where}.{key}: {kind} has no argument {key!r}{_nearest(key, valid)} "
                             f"(valid: {', '.join(valid)})")
    try:
        return cls(**cfg)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _check_classes(loss: nn.Module, where: str, num_classes: int) -> None:
    """Refuse a loss that cannot work with the head's ``num_classes``, naming the key that decides it."""
    sigmoid_ce = isinstance(loss, CrossEntropyLoss) and loss.use_sigmoid
    binary_lovasz = isinstance(loss, LovaszLoss) and loss.loss_type == "binary"
    if (sigmoid_ce or binary_lovasz) and num_classes != 1:
        key = "use_sigmoid=True" if sigmoid_ce else "loss_type='binary'"
        raise ValueError(f"{where}: {key} is mmsegmentation's binary path for one-class heads (num_classes=1); "
                         f"this head predicts {num_classes} classes")
    if isinstance(loss, CrossEntropyLoss) and num_classes == 1 and not loss.use_sigmoid:
        raise ValueError(f"{where}: a one-class head (num_classes=1) needs use_sigmoid=True (a softmax over one "
                         "class is constant)")
    for name in ("class_weight", "alpha"):
        value = getattr(loss, name, None)
        if value is not None and value.dim() == 1 and value.numel() != num_classes:
            raise ValueError(f"{where}.{name} has {value.numel()} entries for a head of {num_classes} classes")


def _nearest(key: str, valid) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
