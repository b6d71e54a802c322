"""Encoder-decoder segmentor (backbone [-> neck] -> decode head [+ auxiliary head]) as an mmengine model.

``forward(inputs, data_samples, mode)`` returns losses (``'loss'``), data samples with
``seg_logits`` and ``pred_sem_seg`` at the original image size (``'predict'``), or the decode
head's raw logits ``(B, K, H/4, W/4)`` (``'tensor'``), so mmengine's Runner trains, validates and
tests it unchanged. Inference is whole-image or sliding-window, with optional flip and multi-scale
test-time augmentation (softmax probabilities averaged, as mmseg's ``SegTTAModel``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import PixelData

from ..backbones import create_backbone
from ..registry import MODELS
from ..structures import SegDataSample
from .losses import SegLoss


def build_backbone(cfg: dict) -> torch.nn.Module:
    """``dict(type='swin_t', **kwargs)`` -> ``create_backbone('swin_t', **kwargs)`` (densekit or timm names)."""
    cfg = dict(cfg)
    return create_backbone(cfg.pop("type"), **cfg)


def _build_head(cfg: dict) -> tuple[torch.nn.Module, SegLoss]:
    """A head from its config plus its loss (mmseg keeps ``loss_decode`` inside the head config)."""
    cfg = copy.deepcopy(cfg)
    loss_cfg = cfg.pop("loss_decode", {}) or {}
    loss_cfg.pop("type", None)  # 'CrossEntropyLoss' in mmseg configs; densekit has one segmentation loss
    if "loss_weight" in loss_cfg:
        loss_cfg["ce_weight"] = loss_cfg.pop("loss_weight")
    loss_cfg.pop("use_sigmoid", None)
    return MODELS.build(cfg), SegLoss(**loss_cfg)


@MODELS.register_module()
class EncoderDecoder(BaseModel):
    """UPerNet-style segmentor.

    Args:
        backbone: ``dict(type=<densekit or timm backbone name>, ...)``.
        decode_head: head config (``type='UPerHead'``, ``in_channels``, ``num_classes``, optional
            ``loss_decode=dict(loss_weight=1.0, dice_weight=0.0, class_weight=None)``).
        auxiliary_head: optional head config (``type='FCNHead'``), its loss weighted by its own
            ``loss_decode.loss_weight`` (0.4 in the recipes).
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
        self.backbone = build_backbone(backbone)
        channels = list(self.backbone.out_channels)
        self.neck = MODELS.build(neck) if neck is not None else None
        if self.neck is not None:
            channels = [self.neck.out_channels] * self.neck.num_outs
        self.decode_head, self.decode_loss = _build_head(decode_head)
        _check_in_channels("decode_head", self.decode_head, channels)
        self.auxiliary_head, self.aux_loss = (None, None)
        if auxiliary_head is not None:
            self.auxiliary_head, self.aux_loss = _build_head(auxiliary_head)
            _check_in_channels("auxiliary_head", self.auxiliary_head, channels)
        self.num_classes = self.decode_head.num_classes  # the head's default when the config omits it
        self.test_cfg = dict(mode="whole") if test_cfg is None else dict(test_cfg)
        _check_test_cfg(self.test_cfg)
        self.align_corners = align_corners

    # -- features and logits -------------------------------------------------------------------
    def extract_feat(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> multi-level NCHW features."""
        feats = self.backbone(inputs)
        return self.neck(feats) if self.neck is not None else feats

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` resized to the input size."""
        logits = self.decode_head(self.extract_feat(inputs))
        return F.interpolate(logits, size=inputs.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    def forward(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None,
                mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.decode_head(self.extract_feat(inputs))
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    # -- training --------------------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        """Decode (and auxiliary) losses against the padded ``gt_sem_seg`` of each sample."""
        labels = torch.stack([s.gt_sem_seg.data.squeeze(0) for s in data_samples]).long()
        feats = self.extract_feat(inputs)
        losses = {f"decode.{k}": v for k, v in self.decode_loss(self.decode_head(feats), labels).items()}
        if self.auxiliary_head is not None:
            losses.update({f"aux.{k}": v for k, v in self.aux_loss(self.auxiliary_head(feats), labels).items()})
        return losses

    # -- inference -------------------------------------------------------------------------------
    def slide_inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """Average logits of overlapping ``crop_size`` windows every ``stride`` pixels (mmseg's grid)."""
        h_crop, w_crop = self.test_cfg["crop_size"]
        h_stride, w_stride = self.test_cfg["stride"]
        b, _, h_img, w_img = inputs.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        preds = inputs.new_zeros((b, self.num_classes, h_img, w_img))
        count = inputs.new_zeros((b, 1, h_img, w_img))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2, x2 = min(h_idx * h_stride + h_crop, h_img), min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                preds[:, :, y1:y2, x1:x2] += self.encode_decode(inputs[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
        return preds / count

    def inference(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the (padded) input size, whole or sliding-window."""
        mode = self.test_cfg.get("mode", "whole")
        if mode == "slide":
            return self.slide_inference(inputs)
        if mode == "whole":
            return self.encode_decode(inputs)
        raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")

    def tta_inference(self, inputs: torch.Tensor, scales: list[float], flip: bool) -> torch.Tensor:
        """Mean softmax probabilities ``(B, K, H, W)`` over scales (and horizontal flips)."""
        size = inputs.shape[-2:]
        total = 0
        probs = inputs.new_zeros((inputs.shape[0], self.num_classes, *size))
        for scale in scales:
            scaled = inputs if scale == 1 else F.interpolate(
                inputs, scale_factor=scale, mode="bilinear", align_corners=self.align_corners)
            for flipped in ((False, True) if flip else (False,)):
                x = scaled.flip(-1) if flipped else scaled
                logits = self.inference(x)
                logits = logits.flip(-1) if flipped else logits
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
                probs += logits.softmax(dim=1)
                total += 1
        return probs / total

    def predict(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None) -> list[SegDataSample]:
        """Per sample: ``seg_logits`` ``(K, H0, W0)`` and ``pred_sem_seg`` ``(1, H0, W0)`` at the original size."""
        tta = self.test_cfg.get("tta")
        logits = self.tta_inference(inputs, **tta) if tta else self.inference(inputs)
        if data_samples is None:
            data_samples = [SegDataSample(metainfo={"img_shape": inputs.shape[-2:], "ori_shape": inputs.shape[-2:]})
                            for _ in range(inputs.shape[0])]
        for logit, sample in zip(logits, data_samples):
            h, w = sample.metainfo.get("img_shape", inputs.shape[-2:])
            logit = logit[:, :h, :w]  # drop the preprocessor's right/bottom padding
            if sample.metainfo.get("flip", False):
                logit = logit.flip(-1)
            ori = tuple(sample.metainfo.get("ori_shape", (h, w)))[:2]
            logit = F.interpolate(logit[None], size=ori, mode="bilinear", align_corners=self.align_corners)[0]
            sample.seg_logits = PixelData(data=logit)
            sample.pred_sem_seg = PixelData(data=logit.argmax(0, keepdim=True))
        return data_samples


def _check_test_cfg(test_cfg: dict) -> None:
    """A misspelt inference mode fails at construction rather than after the first validation epoch."""
    mode = test_cfg.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and not ("crop_size" in test_cfg and "stride" in test_cfg):
        raise ValueError(f"test_cfg mode='slide' needs crop_size=(h, w) and stride=(h, w), got {test_cfg}")
    tta = test_cfg.get("tta")
    if tta and not tta.get("scales"):
        raise ValueError(f"test_cfg.tta needs scales=[...] (and optionally flip=True), got {dict(tta)}")


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
