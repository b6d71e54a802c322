"""Batch assembly for detection: normalise, BGR->RGB, pad to a multiple of 32, stack (mmdet's DetDataPreprocessor)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..registry import MODELS
from .preprocessor import SegDataPreProcessor


@MODELS.register_module(name=["DetDataPreProcessor", "DetDataPreprocessor"])
class DetDataPreProcessor(SegDataPreProcessor):
    """Turns a list of ``(3, H, W)`` uint8 BGR images into a normalised ``(B, 3, Hp, Wp)`` batch.

    The batch is padded on the right/bottom with ``pad_value`` (after normalisation) to its largest image,
    rounded up to ``pad_size_divisor``. Boxes need no change: padding is right/bottom only.

    Each sample gets mmdet's metainfo: ``batch_input_shape`` ``(Hp, Wp)`` and ``pad_shape``, its *own*
    image size rounded up to ``pad_size_divisor`` (anchors beyond it are not trained on).

    Args:
        mean, std: per-channel statistics in RGB order (after ``bgr_to_rgb``), on the 0..255 scale.
        bgr_to_rgb: flip channel order (datasets read BGR with OpenCV).
        pad_size_divisor: pad each side to a multiple of this (mmdet's name).
        pad_value: image padding value (after normalisation).
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), bgr_to_rgb: bool = True,
                 pad_size_divisor: int = 32, pad_value: float = 0.0) -> None:
        super().__init__(mean=mean, std=std, bgr_to_rgb=bgr_to_rgb, size=None, size_divisor=pad_size_divisor,
                         pad_val=pad_value)

    def _round_up(self, h: int, w: int) -> tuple[int, int]:
        d = self.size_divisor or 1
        return -(-h // d) * d, -(-w // d) * d

    def forward(self, data: dict, training: bool = False) -> dict:
        """``{'inputs': [Tensor(3, H, W)], 'data_samples': [DetDataSample]}`` -> ``{'inputs': (B, 3, Hp, Wp), ...}``;
        boxes in the samples are moved to the batch's device."""
        inputs = [self.normalize(img) for img in data["inputs"]]
        height, width = self._target_size([tuple(img.shape[-2:]) for img in inputs], training)
        batch = torch.stack([
            F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]), value=self.pad_val) for img in inputs
        ])
        samples = data.get("data_samples")
        if samples is not None:
            for img, sample in zip(inputs, samples):
                sample.set_metainfo({"batch_input_shape": (height, width),
                                     "pad_shape": self._round_up(*img.shape[-2:])})
                for key in ("gt_instances", "ignored_instances"):
                    if key in sample:
                        setattr(sample, key, getattr(sample, key).to(batch.device))
        return {"inputs": batch, "data_samples": samples}
