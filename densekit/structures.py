"""Data samples passed between datasets, models and metrics (mmsegmentation's vocabulary).

A dataset item after its pipeline is ``{'inputs': Tensor[C, H, W] uint8 (BGR, as OpenCV reads),
'data_samples': SegDataSample}``. The sample's ``metainfo`` carries ``img_path``, ``seg_map_path``,
``ori_shape`` (H, W of the file), ``img_shape`` (H, W after resizing), ``pad_shape`` (after
padding), ``scale_factor`` (w, h), ``flip`` and ``flip_direction``.
"""
from __future__ import annotations

from mmengine.structures import BaseDataElement, PixelData


class SegDataSample(BaseDataElement):
    """Fields: ``gt_sem_seg`` (label map ``(1, H, W)`` long, 255 = ignore), ``pred_sem_seg``
    (``(1, H, W)`` long, original image size) and ``seg_logits`` (``(K, H, W)`` float)."""

    @property
    def gt_sem_seg(self) -> PixelData:
        return self._gt_sem_seg

    @gt_sem_seg.setter
    def gt_sem_seg(self, value: PixelData) -> None:
        self.set_field(value, "_gt_sem_seg", dtype=PixelData)

    @gt_sem_seg.deleter
    def gt_sem_seg(self) -> None:
        del self._gt_sem_seg

    @property
    def pred_sem_seg(self) -> PixelData:
        return self._pred_sem_seg

    @pred_sem_seg.setter
    def pred_sem_seg(self, value: PixelData) -> None:
        self.set_field(value, "_pred_sem_seg", dtype=PixelData)

    @pred_sem_seg.deleter
    def pred_sem_seg(self) -> None:
        del self._pred_sem_seg

    @property
    def seg_logits(self) -> PixelData:
        return self._seg_logits

    @seg_logits.setter
    def seg_logits(self, value: PixelData) -> None:
        self.set_field(value, "_seg_logits", dtype=PixelData)

    @seg_logits.deleter
    def seg_logits(self) -> None:
        del self._seg_logits
