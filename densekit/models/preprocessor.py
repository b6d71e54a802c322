"""Batch assembly for segmentation: normalise, BGR->RGB, pad to a size, stack (mmseg's SegDataPreProcessor)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor
from mmengine.structures import PixelData

from ..registry import MODELS


@MODELS.register_module()
class SegDataPreProcessor(BaseDataPreprocessor):
    """Turns a list of ``(3, H, W)`` uint8 BGR images into a normalised, padded ``(B, 3, Hp, Wp)`` batch.

    Args:
        mean, std: per-channel statistics in RGB order (after ``bgr_to_rgb``), on the 0..255 scale.
        bgr_to_rgb: flip channel order (datasets read BGR with OpenCV).
        size: in training, pad every image on the right/bottom to this ``(H, W)`` (the crop size);
            larger images are left as they are. At test time a batch is only padded to its largest
            image (and ``size_divisor``), as mmseg does.
        size_divisor: otherwise pad each side to a multiple of this.
        pad_val: image padding value (after normalisation: 0).
        seg_pad_val: label padding value (ignored by the loss).
    """

    def __init__(
        self,
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        bgr_to_rgb: bool = True,
        size: tuple[int, int] | None = None,
        size_divisor: int | None = None,
        pad_val: float = 0.0,
        seg_pad_val: int = 255,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.bgr_to_rgb = bgr_to_rgb
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` uint8 or float on the 0..255 scale -> normalised float."""
        image = image.to(self.mean.device).float()
        if self.bgr_to_rgb and image.shape[0] == 3:
            image = image.flip(0)
        return (image - self.mean) / self.std

    def _target_size(self, shapes: list[tuple[int, int]], training: bool) -> tuple[int, int]:
        height = max(h for h, _ in shapes)
        width = max(w for _, w in shapes)
        if self.size is not None and training:  # mmseg pads to the crop size in training only
            height, width = max(height, self.size[0]), max(width, self.size[1])
        if self.size_divisor:
            d = self.size_divisor
            height, width = -(-height // d) * d, -(-width // d) * d
        return height, width

    def forward(self, data: dict, training: bool = False) -> dict:
        """``{'inputs': [Tensor(3, H, W)], 'data_samples': [SegDataSample]}`` -> batched, padded inputs.

        Each sample's ``pad_shape`` and ``batch_input_shape`` are set, and in training its
        ``gt_sem_seg`` is padded with ``seg_pad_val`` to the batch size.
        """
        inputs = [self.normalize(img) for img in data["inputs"]]
        samples = data.get("data_samples")
        height, width = self._target_size([tuple(img.shape[-2:]) for img in inputs], training)
        batch = torch.stack([
            F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]), value=self.pad_val) for img in inputs
        ])
        if samples is not None:
            for sample in samples:
                sample.set_metainfo({"batch_input_shape": (height, width), "pad_shape": (height, width)})
                if training and "gt_sem_seg" in sample:
                    label = sample.gt_sem_seg.data.to(batch.device)
                    pad = (0, width - label.shape[-1], 0, height - label.shape[-2])
                    sample.gt_sem_seg = PixelData(data=F.pad(label, pad, value=self.seg_pad_val))
        return {"inputs": batch, "data_samples": samples}
