"""Data samples passed between datasets, models and metrics (mmsegmentation's vocabulary).

A dataset item after its pipeline is ``{'inputs': Tensor[C, H, W] uint8 (BGR, as OpenCV reads),
'data_samples': SegDataSample}``. The sample's ``metainfo`` carries ``img_path``, ``seg_map_path``,
``ori_shape`` (H, W of the file), ``img_shape`` (H, W after resizing), ``pad_shape`` (after
padding), ``scale_factor`` (w, h), ``flip`` and ``flip_direction``. Detection items carry a ``DetDataSample``.
"""
from __future__ import annotations

from mmengine.structures import BaseDataElement, InstanceData, PixelData


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


class DetDataSample(BaseDataElement):
    """Detection sample (mmdetection 3.x's vocabulary). Boxes are ``(N, 4)`` float ``(x1, y1, x2, y2)``
    in pixels (x2, y2 exclusive edges, no +1), labels ``(N,)`` int64.

    Fields: ``gt_instances`` (``bboxes``, ``labels`` and, where known, ``areas``: COCO's annotation
    area, the box area otherwise), ``ignored_instances`` (the same for crowd / 'difficult' boxes, which
    neither count as objects nor as background) and ``pred_instances`` (``bboxes``, ``scores`` and
    ``labels``, in original image coordinates). Metainfo as ``SegDataSample`` plus ``img_id``.
    """

    @property
    def gt_instances(self) -> InstanceData:
        return self._gt_instances

    @gt_instances.setter
    def gt_instances(self, value: InstanceData) -> None:
        self.set_field(value, "_gt_instances", dtype=InstanceData)

    @gt_instances.deleter
    def gt_instances(self) -> None:
        del self._gt_instances

    @property
    def ignored_instances(self) -> InstanceData:
        return self._ignored_instances

    @ignored_instances.setter
    def ignored_instances(self, value: InstanceData) -> None:
        self.set_field(value, "_ignored_instances", dtype=InstanceData)

    @ignored_instances.deleter
    def ignored_instances(self) -> None:
        del self._ignored_instances

    @property
    def pred_instances(self) -> InstanceData:
        return self._pred_instances

    @pred_instances.setter
    def pred_instances(self, value: InstanceData) -> None:
        self.set_field(value, "_pred_instances", dtype=InstanceData)

    @pred_instances.deleter
    def pred_instances(self) -> None:
        del self._pred_instances
