"""What every densekit segmentor shares (UPerNet's ``EncoderDecoder``, ``SwinUnet``): mmengine's ``forward`` modes,
whole-image or sliding-window inference, flip and multi-scale test-time augmentation, and the post-processing that
brings logits back to each image's original size.

A subclass builds its networks and sets ``num_classes``, ``test_cfg`` (checked by ``check_test_cfg``) and
``align_corners``; it implements ``encode_decode`` (logits at the input size), ``_forward`` (what
``mode='tensor'`` returns) and ``loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import PixelData

from ..structures import SegDataSample
from .losses import predict_labels


def check_test_cfg(test_cfg: dict) -> None:
    """A misspelt inference mode fails at construction rather than after the first validation epoch."""
    mode = test_cfg.get("mode", "whole")
    if mode not in ("whole", "slide"):
        raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide" and not ("crop_size" in test_cfg and "stride" in test_cfg):
        raise ValueError(f"test_cfg mode='slide' needs crop_size=(h, w) and stride=(h, w), got {test_cfg}")
    tta = test_cfg.get("tta")
    if tta and not tta.get("scales"):
        raise ValueError(f"test_cfg.tta needs scales=[...] (and optionally flip=True), got {dict(tta)}")


def stack_labels(data_samples: list[SegDataSample] | None, device: torch.device) -> torch.Tensor:
    """The samples' ``gt_sem_seg`` ``(1, H, W)`` (padded alike by the preprocessor) -> ``(B, H, W)`` long."""
    if not data_samples:
        raise ValueError("mode='loss' needs data_samples with gt_sem_seg")
    return torch.stack([s.gt_sem_seg.data.squeeze(0) for s in data_samples]).long().to(device)


class BaseSegmentor(BaseModel):
    """mmengine model base of the segmentors; see the module docstring for what a subclass provides.

    ``test_cfg``: ``mode='whole'`` or ``'slide'`` (with ``crop_size`` and ``stride``), optional
    ``tta=dict(scales=[0.5, ..., 1.75], flip=True)`` (probabilities averaged, as mmseg's ``SegTTAModel``).
    """

    num_classes: int
    test_cfg: dict
    align_corners: bool = False

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the input size ``(B, C, H, W)``."""
        raise NotImplementedError

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The raw output of ``mode='tensor'``."""
        raise NotImplementedError

    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None,
                mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self._forward(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

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
        """Mean probabilities ``(B, K, H, W)`` over scales (and horizontal flips): softmax, or sigmoid for a
        one-channel head."""
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
                probs += logits.softmax(dim=1) if logits.shape[1] > 1 else logits.sigmoid()
                total += 1
        return probs / total

    def predict(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None) -> list[SegDataSample]:
        """Per sample: ``seg_logits`` ``(K, H0, W0)`` (probabilities under TTA) and ``pred_sem_seg`` ``(1, H0, W0)``.

        Logits are cropped to ``img_shape`` (the preprocessor pads on the right and bottom), unflipped, and
        resized bilinearly to ``ori_shape``; the label is the arg-max (one channel: above mmseg's threshold).
        """
        tta = self.test_cfg.get("tta")
        logits = self.tta_inference(inputs, **tta) if tta else self.inference(inputs)
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [SegDataSample(metainfo={"img_shape": shape, "ori_shape": shape})
                            for _ in range(inputs.shape[0])]
        for logit, sample in zip(logits, data_samples):
            h, w = tuple(sample.metainfo.get("img_shape", inputs.shape[-2:]))[:2]
            logit = logit[:, :h, :w]  # drop the preprocessor's right/bottom padding
            if sample.metainfo.get("flip", False):
                logit = logit.flip(-1)
            ori = tuple(sample.metainfo.get("ori_shape", (h, w)))[:2]
            if tuple(logit.shape[-2:]) != ori:
                logit = F.interpolate(logit[None], size=ori, mode="bilinear", align_corners=self.align_corners)[0]
            sample.seg_logits = PixelData(data=logit)
            sample.pred_sem_seg = PixelData(data=predict_labels(logit[None], probabilities=bool(tta)))
        return data_samples
