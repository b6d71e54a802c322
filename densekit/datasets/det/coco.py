"""COCO-format detection datasets through pycocotools (mmdetection 3.x ``CocoDataset`` semantics).

Each item is ``dict(img_id, img_path, height, width, instances=[dict(bbox=[x1, y1, x2, y2],
bbox_label, ignore_flag, area)])`` with ``x2 = x + w`` (no +1 pixel); ``LoadDetAnnotations`` and the
other detection transforms (``densekit.datasets.det.transforms``) turn it into ``{'inputs',
'data_samples': DetDataSample}``. As in mmdet:

- ``iscrowd`` boxes get ``ignore_flag=1`` (they end up in ``ignored_instances``: neither objects nor
  background); annotations marked ``ignore`` are dropped;
- boxes narrower or lower than 1 pixel, with ``area <= 0``, or not overlapping the image are skipped;
- with ``filter_empty_gt`` (training only) images without a usable, non-crowd box are skipped.

Unlike mmdet, both skips are counted and reported in one ``DatasetWarning`` each (with examples), and a
missing image file fails at load time (``FileNotFoundError`` naming the file and the annotation file),
not later inside a dataloader worker.
"""
from __future__ import annotations

import contextlib
import io
import os.path as osp
import warnings
from collections.abc import Callable, Sequence

from mmengine.dataset import BaseDataset

from ...registry import DATASETS
from ..bad_samples import DatasetWarning
from ..loading import build_pipeline


def warn_skipped(dataset: str, what: str, examples: list[str], limit: int = 3) -> None:
    """One ``DatasetWarning`` for ``len(examples)`` skipped items, naming the first ``limit``."""
    if examples:
        shown = "; ".join(examples[:limit]) + (" ..." if len(examples) > limit else "")
        warnings.warn(f"{dataset}: skipped {len(examples)} {what} ({shown})", DatasetWarning, stacklevel=3)


@DATASETS.register_module()
class CocoDataset(BaseDataset):
    """Images and boxes of a COCO json (``instances_*.json``).

    Args:
        data_root: root that ``ann_file`` and ``data_prefix['img']`` are relative to.
        ann_file: the COCO json.
        data_prefix: ``dict(img='train2017/')``: folder of the images' ``file_name``.
        classes: category names to use, in label order (default: ``METAINFO['classes']``, or every
            category of the json in id order when that is empty); other categories are dropped.
        filter_empty_gt: skip images without a usable non-crowd box (only when not ``test_mode``).
        check_files: verify at load time that every image file exists.
        pipeline, test_mode, indices, serialize_data, lazy_init, max_refetch: as ``mmengine`` ``BaseDataset``.
    """

    METAINFO: dict = dict(classes=())

    def __init__(self, data_root: str = "", ann_file: str = "", data_prefix: dict | None = None,
                 classes: Sequence[str] | None = None, filter_empty_gt: bool = True, check_files: bool = True,
                 pipeline: Sequence[dict | Callable] = (), metainfo: dict | None = None, test_mode: bool = False,
                 indices: int | Sequence[int] | None = None, serialize_data: bool = True, lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        meta = dict(metainfo or {})
        if classes is not None:
            meta["classes"] = tuple(classes)
        self.filter_empty_gt = filter_empty_gt
        self.check_files = check_files
        super().__init__(ann_file=ann_file, metainfo=meta, data_root=data_root,
                         data_prefix=dict(img=(data_prefix or {}).get("img", "")), indices=indices,
                         serialize_data=serialize_data, pipeline=build_pipeline(pipeline), test_mode=test_mode,
                         lazy_init=lazy_init, max_refetch=max_refetch)

    def _load_coco(self):
        from pycocotools.coco import COCO

        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f"{type(self).__name__}: annotation file {self.ann_file} does not exist "
                                    f"(data_root={self.data_root!r})")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            return COCO(self.ann_file)

    def load_data_list(self) -> list[dict]:
        """One dict per image in the json's image order; skips and checks as in the module docstring."""
        coco = self._load_coco()
        cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        classes = tuple(self._metainfo.get("classes") or ())
        if not classes:
            classes = tuple(cats[i] for i in sorted(cats))
            self._metainfo["classes"] = classes
        by_name = {name: cat_id for cat_id, name in cats.items()}
        missing = [c for c in classes if c not in by_name]
        if missing:
            raise ValueError(f"{type(self).__name__}: classes {missing} are not categories of {self.ann_file} "
                             f"(it has {sorted(cats.values())})")
        cat2label = {by_name[name]: label for label, name in enumerate(classes)}
        img_dir = self.data_prefix.get("img", "")
        data_list, degenerate, empty, missing_files = [], [], [], []
        for img_id in coco.getImgIds():
            info = coco.loadImgs([img_id])[0]
            img_path = osp.join(img_dir, info["file_name"])
            instances = []
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
                instance = self._parse_ann(ann, info, cat2label)
                if instance is None and ann.get("category_id") in cat2label and not ann.get("ignore", False):
                    degenerate.append(f"annotation id {ann.get('id')} bbox {ann.get('bbox')} in image {img_id}")
                elif instance is not None:
                    instances.append(instance)
            if self.filter_empty_gt and not self.test_mode and not any(i["ignore_flag"] == 0 for i in instances):
                empty.append(f"image id {img_id} ({info['file_name']})")
                continue
            if self.check_files and not osp.isfile(img_path):
                missing_files.append(img_path)
                continue
            data_list.append(dict(img_id=img_id, img_path=img_path, height=info["height"], width=info["width"],
                                  instances=instances))
        name = type(self).__name__
        warn_skipped(name, "box(es) narrower or lower than 1 pixel, of area <= 0 or outside the image", degenerate)
        warn_skipped(name, "image(s) without any usable non-crowd box (filter_empty_gt)", empty)
        if missing_files:
            more = f" and {len(missing_files) - 1} more" if len(missing_files) > 1 else ""
            raise FileNotFoundError(f"{name}: image file {missing_files[0]}{more} listed in {self.ann_file} "
                                    f"does not exist (data_prefix img={img_dir!r})")
        if not data_list:
            raise ValueError(f"{name}: no image left in {self.ann_file} after filtering")
        return data_list

    @staticmethod
    def _parse_ann(ann: dict, info: dict, cat2label: dict[int, int]) -> dict | None:
        """mmdet's ``parse_data_info`` for one annotation; None when it is skipped."""
        if ann.get("ignore", False) or ann.get("category_id") not in cat2label:
            return None
        x, y, w, h = ann["bbox"]
        inter_w = max(0, min(x + w, info["width"]) - max(x, 0))
        inter_h = max(0, min(y + h, info["height"]) - max(y, 0))
        if inter_w * inter_h == 0 or ann.get("area", w * h) <= 0 or w < 1 or h < 1:
            return None
        return dict(bbox=[x, y, x + w, y + h], bbox_label=cat2label[ann["category_id"]],
                    ignore_flag=int(bool(ann.get("iscrowd", False))), area=float(ann.get("area", w * h)))
