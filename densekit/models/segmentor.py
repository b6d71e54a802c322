"""Encoder-decoder segmentor (backbone [-> neck] -> decode head [+ auxiliary head]) as an mmengine model.

``forward(inputs, data_samples, mode)`` returns losses (``'loss'``), data samples with
``seg_logits`` and ``pred_sem_seg`` at the original image size (``'predict'``), or the decode
head's raw logits ``(B, K, H/4, W/4)`` (``'tensor'``), so mmengine's Runner trains, validates and
tests it unchanged. Inference (``BaseSegmentor``) is whole-image or sliding-window, with optional flip and
multi-scale test-time augmentation (softmax probabilities averaged, as mmseg's ``SegTTAModel``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..backbones import create_backbone
from ..registry import MODELS
from ..structures import SegDataSample
from .base_segmentor import BaseSegmentor, check_test_cfg, stack_labels
from .losses import DecodeLoss, build_decode_loss, pop_loss_keys


def build_backbone(cfg: dict) -> torch.nn.Module:
    """``dict(type='swin_t', **kwargs)`` -> ``create_backbone('swin_t', **kwargs)`` (densekit or timm names)."""
    cfg = dict(cfg)
    return create_backbone(cfg.pop("type"), **cfg)


def _build_head(cfg: dict, name: str, align_corners: bool) -> tuple[torch.nn.Module, DecodeLoss]:
    """A head from its config plus its loss stack (mmseg keeps ``loss_decode`` and ``ignore_index`` inside the
    head config)."""
    cfg = copy.deepcopy(dict(cfg))
    loss_decode, ignore_index = pop_loss_keys(cfg)
    head = MODELS.build(cfg)
    loss = build_decode_loss(loss_decode, f"{name}.loss_decode", num_classes=head.num_classes,
                             ignore_index=ignore_index, align_corners=align_corners)
    return head, loss


@MODELS.register_module()
class EncoderDecoder(BaseSegmentor):
    """UPerNet-style segmentor.

    Args:
        backbone: ``dict(type=<densekit or timm backbone name>, ...)``.
        decode_head: head config (``type='UPerHead'``, ``in_channels``, ``num_classes``), plus mmseg's
            ``loss_decode`` (a ``dict(type=...)`` or a list of them, see ``densekit.models.losses``; default
            ``CrossEntropyLoss``) and ``ignore_index`` (default 255).
        auxiliary_head: optional head config (``type='FCNHead'``), its loss weighted by its own
            ``loss_decode`` ``loss_weight`` (0.4 in the recipes).
        neck: optional neck config between backbone and heads.
        data_preprocessor: ``SegDataPreProcessor`` config.
        test_cfg: ``mode='whole'`` or ``'slide'`` (with ``crop_size`` and ``stride``), optional
            ``tta=dict(scales=[0.5, ..., 1.75], flip=True)``.
        align_corners: for every logits resize.
    """

    def __init__(self, backbone: dict, decode_head: dict, auxiliary_head: dict | None = None,
                 neck: dict | None = None, data_preprocessor: dict | None = None, test_cfg: dict | None = None,
                 align_corners: bool = False, init_cfg: dict | None = None) -> None:
        data_preprocessor = data_preprocessor or dict(type="SegDataPreProcessor")
        if isinstance(data_preprocessor, dict):
            # Built from densekit's registry: BaseModel would look in mmengine's root registry, which only
            # finds densekit's modules under default_scope='densekit' (set by configs, not by direct use).
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.align_corners = align_corners
        self.backbone = build_backbone(backbone)
        channels = list(self.backbone.out_channels)
        self.neck = MODELS.build(neck) if neck is not None else None
        if self.neck is not None:
            channels = [self.neck.out_channels] * self.neck.num_outs
        self.decode_head, self.decode_loss = _build_head(decode_head, "decode_head", align_corners)
        _check_in_channels("decode_head", self.decode_head, channels)
        self.auxiliary_head, self.aux_loss = (None, None)
        if auxiliary_head is not None:
            self.auxiliary_head, self.aux_loss = _build_head(auxiliary_head, "auxiliary_head", align_corners)
            _check_in_channels("auxiliary_head", self.auxiliary_head, channels)
        self.num_classes = self.decode_head.num_classes  # the head's default when the config omits it
        self.test_cfg = dict(mode="whole") if test_cfg is None else dict(test_cfg)
        check_test_cfg(self.test_cfg)

    # -- features and logits -------------------------------------------------------------------
    def extract_feat(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> multi-level NCHW features."""
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` resized to the input size."""
        logits = self.decode_head(self.extract_feat(inputs))
        return F.interpolate(logits, size=inputs.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The decode head's raw logits ``(B, K, H/4, W/4)``."""
        return self.decode_head(self.extract_feat(inputs))

    # -- training --------------------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        """Decode (and auxiliary) losses against the padded ``gt_sem_seg`` of each sample: ``decode.loss_ce``,
        ``decode.acc_seg``, ``aux.loss_ce``, ... (one key per ``loss_name``)."""
        labels = stack_labels(data_samples, inputs.device)
        feats = self.extract_feat(inputs)
        losses = {f"decode.{k}": v for k, v in self.decode_loss(self.decode_head(feats), labels).items()}
        if self.auxiliary_head is not None:
            losses.update({f"aux.{k}": v for k, v in self.aux_loss(self.auxiliary_head(feats), labels).items()})
        return losses


def _check_in_channels(name: str, head: torch.nn.Module, channels: list[int]) -> None:
    """Heads must be built for the features they get: compare at construction, not at the first batch.

    ``head.in_channels`` (a list read at ``head.in_index``, or one int read at level ``in_index``) against
    the backbone/neck ``channels``; the error names the head and both channel lists.
    """
    expected, in_index = getattr(head, "in_channels", None), getattr(head, "in_index", None)
    if expected is None or in_index is None:
        return
    what = f"{name} ({type(head).__name__})"
    if isinstance(expected, int):
        got = channels[in_index] if -len(channels) <= in_index < len(channels) else None
        if got != expected:
            raise ValueError(f"{what}: in_channels={expected} but level in_index={in_index} of the backbone/neck "
                             f"has {got} channels (backbone/neck out_channels: {channels})")
        return
    indices = list(in_index)
    got = [channels[i] if -len(channels) <= i < len(channels) else None for i in indices]
    if list(expected) != got:
        raise ValueError(f"{what}: in_channels={list(expected)} at in_index={indices} does not match the "
                         f"backbone/neck out_channels {channels} (levels {indices} have {got})")
