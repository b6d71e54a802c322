"""PASCAL VOC detection datasets from XML annotations (mmdetection 3.x ``VOCDataset`` / ``XMLDataset`` semantics).

Layout: ``{data_root}/{ann_dir}/{name}.xml`` with ``{data_root}/{img_dir}/{name}{img_suffix}``, where
``name`` comes from ``split`` (one per line; VOC's ``ImageSets/Main/trainval.txt``) or, without a split
file, from every XML file in ``ann_dir`` (sorted). The image is found by ``name``, not by the XML's
``<filename>``. Defaults match a flat ``annotations/`` + ``images/`` folder; for the VOCdevkit layout pass
``ann_dir='Annotations', img_dir='JPEGImages', split='ImageSets/Main/trainval.txt'``.

Boxes are read as mmdet 3.x reads them: ``int(float(text))`` of ``xmin, ymin, xmax, ymax``, no pixel
shifted (detectron2 subtracts 1 from ``xmin``/``ymin``). ``difficult`` objects get ``ignore_flag=1``;
objects of classes outside ``classes`` are skipped with a counted warning; with ``filter_empty_gt``
(training only) images without a non-difficult box are skipped with a counted warning.
"""
from __future__ import annotations

import os
import os.path as osp
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

from mmengine.dataset import BaseDataset

from ...registry import DATASETS
from ..loading import build_pipeline
from .coco import warn_skipped

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


@DATASETS.register_module()
class VOCDataset(BaseDataset):
    """Images and boxes of PASCAL VOC XML files.

    Args:
        data_root: root that ``ann_dir``, ``img_dir`` and ``split`` are relative to.
        ann_dir, img_dir: folders of the XML files and the images.
        split: optional file listing one image name per line (no suffix).
        img_suffix: image file ending.
        classes: class names in label order (default VOC's 20).
        filter_empty_gt: skip images without a non-difficult box (only when not ``test_mode``).
        pipeline, test_mode, indices, serialize_data, lazy_init, max_refetch: as ``mmengine`` ``BaseDataset``.
    """

    METAINFO: dict = dict(classes=VOC_CLASSES)

    def __init__(self, data_root: str = "", ann_dir: str = "annotations", img_dir: str = "images",
                 split: str | None = None, img_suffix: str = ".jpg", classes: Sequence[str] | None = None,
                 filter_empty_gt: bool = True, pipeline: Sequence[dict | Callable] = (), test_mode: bool = False,
                 indices: int | Sequence[int] | None = None, serialize_data: bool = True, lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        self.img_suffix = img_suffix
        self.filter_empty_gt = filter_empty_gt
        meta = dict(classes=tuple(classes)) if classes is not None else {}
        super().__init__(ann_file=split or "", metainfo=meta, data_root=data_root,
                         data_prefix=dict(ann=ann_dir, img=img_dir), indices=indices, serialize_data=serialize_data,
                         pipeline=build_pipeline(pipeline), test_mode=test_mode, lazy_init=lazy_init,
                         max_refetch=max_refetch)

    def _names(self) -> list[str]:
        ann_dir = self.data_prefix["ann"]
        if not osp.isdir(ann_dir):
            raise FileNotFoundError(f"{type(self).__name__}: annotation folder {ann_dir} does not exist "
                                    f"(data_root={self.data_root!r})")
        if self.ann_file:
            with open(self.ann_file, encoding="utf-8") as f:
                return [line.split()[0] for line in f if line.strip()]
        return sorted(name[:-4] for name in os.listdir(ann_dir) if name.endswith(".xml"))

    def load_data_list(self) -> list[dict]:
        """One dict per image (``img_id`` = name, ``img_path``, ``height``, ``width``, ``instances``)."""
        classes = tuple(self._metainfo["classes"])
        data_list, unknown, empty = [], [], []
        for name in self._names():
            xml_path = osp.join(self.data_prefix["ann"], name + ".xml")
            img_path = osp.join(self.data_prefix["img"], name + self.img_suffix)
            if not osp.isfile(xml_path):
                raise FileNotFoundError(f"{type(self).__name__}: annotation {xml_path} does not exist")
            if not osp.isfile(img_path):
                raise FileNotFoundError(f"{type(self).__name__}: image file {img_path} (for {xml_path}) "
                                        "does not exist")
            info = self._parse_xml(xml_path, classes, unknown)
            if self.filter_empty_gt and not self.test_mode and not any(
                    i["ignore_flag"] == 0 for i in info["instances"]):
                empty.append(name)
                continue
            data_list.append(dict(img_id=name, img_path=img_path, xml_path=xml_path, **info))
        warn_skipped(type(self).__name__, "object(s) of classes outside `classes`", unknown)
        warn_skipped(type(self).__name__, "image(s) without a non-difficult box (filter_empty_gt)", empty)
        if not data_list:
            raise ValueError(f"{type(self).__name__}: no image found or left after filtering under "
                             f"{self.data_prefix['ann']}")
        return data_list

    @staticmethod
    def _parse_xml(xml_path: str, classes: tuple[str, ...], unknown: list[str]) -> dict:
        root = ET.parse(xml_path).getroot()
        size = root.find("size")
        height, width = int(size.find("height").text), int(size.find("width").text)
        instances = []
        for obj in root.findall("object"):
            label = obj.find("name").text.strip()
            if label not in classes:
                unknown.append(f"{label!r} in {osp.basename(xml_path)}")
                continue
            difficult = obj.find("difficult")
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (int(float(box.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax"))
            instances.append(dict(bbox=[x1, y1, x2, y2], bbox_label=classes.index(label),
                                  ignore_flag=int(difficult is not None and int(difficult.text) == 1),
                                  area=float((x2 - x1) * (y2 - y1))))
        return dict(height=height, width=width, instances=instances)
