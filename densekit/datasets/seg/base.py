"""Folder datasets for semantic segmentation (mmsegmentation 1.x ``BaseSegDataset`` semantics).

An image ``{data_root}/{img_dir}/{name}{img_suffix}`` is paired with the mask
``{data_root}/{ann_dir}/{name}{seg_map_suffix}``; ``name`` may contain sub-folders (the listing is
recursive, as in mmseg, so Cityscapes' ``city/xxx`` layout works). Items are sorted by image path, so
the order is the same on every machine. Each item is a dict ``{img_path, seg_map_path,
reduce_zero_label, ignore_index, seg_fields}`` that the pipeline (``densekit.datasets.seg.transforms``)
turns into ``{'inputs': uint8 (3, H, W), 'data_samples': SegDataSample}``.

Unlike mmseg, a missing folder, an image without a mask, an empty folder or a split file naming a
missing image fail at construction with a message that says what was looked for and where, instead
of failing later inside a dataloader worker. Samples that fail to load (truncated or 16-bit image,
image and mask of different sizes, label values >= the number of classes) raise ``BadSampleError``
naming the dataset, index and file; ``on_bad_sample='skip'`` skips them instead (and missing files at
construction), counted in ``dataset.skipped`` (see ``densekit.datasets.bad_samples``).
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Callable, Sequence

from mmengine.dataset import BaseDataset

from ...registry import DATASETS
from ...visualization import default_palette
from ..bad_samples import BadSampleMixin
from ..loading import build_pipeline


def _list_files(folder: str, suffix: str) -> list[str]:
    """Paths relative to ``folder`` of every file ending with ``suffix`` (recursive, sorted)."""
    found = []
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        rel_dir = osp.relpath(dirpath, folder)
        for name in filenames:
            if name.endswith(suffix):
                found.append(name if rel_dir == "." else osp.join(rel_dir, name))
    return sorted(found)


@DATASETS.register_module(name=["SegDataset", "BaseSegDataset"])
class SegDataset(BadSampleMixin, BaseDataset):
    """Images and label masks in two folders, paired by basename.

    Args:
        data_root: root that ``img_dir``, ``ann_dir`` and ``split`` are relative to.
        img_dir: image folder (``data_prefix['img_path']`` in mmseg configs).
        ann_dir: mask folder (``data_prefix['seg_map_path']``); None for a dataset without labels.
        classes: class names, index ``i`` = label value ``i`` after ``reduce_zero_label``. Defaults to
            ``METAINFO['classes']`` of the subclass.
        palette: one RGB colour per class; generated deterministically (as mmseg does) when None.
        img_suffix, seg_map_suffix: file endings; the part before them is the pairing name.
        reduce_zero_label: label 0 means "unlabelled": it becomes 255 and every other label drops
            by one (ADE20K). Applied by ``LoadAnnotations``, which reads it from each item.
        ignore_index: label value excluded from losses and metrics.
        split: a text file (relative to ``data_root``) listing one name per line, without suffix
            (mmseg's ``ann_file``); when None every image in ``img_dir`` is used.
        pipeline: transforms (configs or callables) applied to each item.
        metainfo: mmseg-style ``dict(classes=..., palette=...)``; ``classes``/``palette`` win.
        data_prefix: mmseg-style ``dict(img_path=..., seg_map_path=...)``; overrides the folders.
        ann_file: mmseg's name for ``split``.
        on_bad_sample: ``'raise'`` (default) or ``'skip'``: a sample that cannot be used (missing,
            unreadable, mismatched, out-of-range labels) is replaced by a random other one (at most
            ``max_refetch`` tries), warned about and recorded in ``self.skipped`` (path -> reason).
        test_mode, indices, serialize_data, lazy_init, max_refetch: as in ``mmengine.dataset.BaseDataset``.

    ``metainfo`` has ``classes``, ``palette``, ``reduce_zero_label`` and ``ignore_index``. Subclasses
    set ``LAYOUT_HINT`` (one sentence on where to get the data) for the missing-folder error.
    """

    METAINFO: dict = dict()
    LAYOUT_HINT: str = ""

    def __init__(self,
                 data_root: str = "",
                 img_dir: str = "",
                 ann_dir: str | None = "",
                 classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None,
                 img_suffix: str = ".jpg",
                 seg_map_suffix: str = ".png",
                 reduce_zero_label: bool = False,
                 ignore_index: int = 255,
                 split: str | None = None,
                 pipeline: Sequence[dict | Callable] = (),
                 metainfo: dict | None = None,
                 data_prefix: dict | None = None,
                 ann_file: str | None = None,
                 test_mode: bool = False,
                 indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 on_bad_sample: str = "raise") -> None:
        self._init_bad_samples(on_bad_sample)
        if data_prefix is not None:
            img_dir = data_prefix.get("img_path", img_dir)
            ann_dir = data_prefix.get("seg_map_path", ann_dir)
        self.img_dir, self.ann_dir = img_dir, ann_dir
        self.img_suffix, self.seg_map_suffix = img_suffix, seg_map_suffix
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        meta = dict(metainfo or {})
        if classes is not None:
            meta["classes"] = classes
        if palette is not None:
            meta["palette"] = palette
        prefix = {"img_path": img_dir}
        if ann_dir is not None:
            prefix["seg_map_path"] = ann_dir
        super().__init__(ann_file=split or ann_file or "", metainfo=meta, data_root=data_root,
                         data_prefix=prefix, indices=indices, serialize_data=serialize_data,
                         pipeline=build_pipeline(pipeline), test_mode=test_mode, lazy_init=True,
                         max_refetch=max_refetch)
        self._check_metainfo()  # before listing files, so a config error is reported first
        if not lazy_init:
            self.full_init()

    def _check_metainfo(self) -> None:
        classes = self._metainfo.get("classes")
        if not classes:
            raise ValueError(f"{type(self).__name__} needs class names: pass classes=[...] "
                             "(index i names label value i after reduce_zero_label)")
        self._metainfo["classes"] = tuple(classes)
        palette = self._metainfo.get("palette")
        if palette is None:
            palette = default_palette(len(classes))
        if len(palette) != len(classes) or any(len(c) != 3 for c in palette):
            raise ValueError(f"palette must hold one RGB triple per class: {len(classes)} classes, "
                             f"got {len(palette)} entries")
        self._metainfo["palette"] = [list(map(int, c)) for c in palette]
        self._metainfo["reduce_zero_label"] = self.reduce_zero_label
        self._metainfo["ignore_index"] = self.ignore_index

    def _layout(self) -> str:
        root = self.data_root or "."
        text = (f"{type(self).__name__} expects images as {osp.join(root, self.img_dir, '*' + self.img_suffix)}")
        if self.ann_dir is not None:
            text += (f" and masks with the same name as "
                     f"{osp.join(root, self.ann_dir, '*' + self.seg_map_suffix)}")
        return text + "." + (f" {self.LAYOUT_HINT}" if self.LAYOUT_HINT else "")

    def _require_dir(self, path: str, what: str) -> None:
        if not osp.isdir(path):
            raise FileNotFoundError(f"{what} folder {osp.abspath(path)} does not exist "
                                    f"(data_root={self.data_root!r}). "
                                    + self._layout())

    def check_layout(self) -> None:
        """Raise ``FileNotFoundError`` (naming the expected layout) if a folder or split file this dataset
        reads is missing. Cheap (lists nothing), so tools call it on a ``lazy_init`` dataset to fail
        before building a model."""
        self._require_dir(self.data_prefix["img_path"], "Image")
        if self.data_prefix.get("seg_map_path") is not None:
            self._require_dir(self.data_prefix["seg_map_path"], "Annotation")
        if self.ann_file and not osp.isfile(self.ann_file):
            raise FileNotFoundError(f"split file {self.ann_file} does not exist; it should list one image "
                                    f"name per line, without the suffix {self.img_suffix!r}. " + self._layout())

    def load_data_list(self) -> list[dict]:
        """One dict per image: sorted by image path, or in the split file's order (mmseg's order)."""
        img_dir = self.data_prefix["img_path"]
        ann_dir = self.data_prefix.get("seg_map_path")
        self.check_layout()
        if self.ann_file:  # the split file's order, as mmseg
            names = self._names_from_split(img_dir)
        else:  # sorted by path, as mmseg
            cut = len(self.img_suffix)
            names = [f[:-cut] for f in _list_files(img_dir, self.img_suffix)]
        if not names:
            where = self.ann_file or osp.join(img_dir, "*" + self.img_suffix)
            raise FileNotFoundError(f"{type(self).__name__} is empty: no image found for {where}. "
                                    + self._layout())
        data_list = []
        num_classes = len(self._metainfo["classes"])
        for name in names:
            info = dict(img_path=osp.join(img_dir, name + self.img_suffix),
                        reduce_zero_label=self.reduce_zero_label, ignore_index=self.ignore_index,
                        num_classes=num_classes, seg_fields=[])
            if ann_dir is not None:
                info["seg_map_path"] = osp.join(ann_dir, name + self.seg_map_suffix)
                if not osp.isfile(info["seg_map_path"]):
                    self.bad_sample(info["img_path"], f"image {info['img_path']} has no mask: expected "
                                    f"{info['seg_map_path']}. " + self._layout(), FileNotFoundError)
                    continue
            data_list.append(info)
        if not data_list:
            raise FileNotFoundError(f"{type(self).__name__} is empty: all {len(names)} images were skipped "
                                    f"({next(iter(self.skipped.values()))})")
        return data_list

    def _names_from_split(self, img_dir: str) -> list[str]:
        with open(self.ann_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        found = []
        for name in names:
            path = osp.join(img_dir, name + self.img_suffix)
            if osp.isfile(path):
                found.append(name)
            else:
                self.bad_sample(path, f"split file {self.ann_file} lists {name!r} but {path} does not exist.",
                                FileNotFoundError)
        if names and not found:
            raise FileNotFoundError(f"{type(self).__name__} is empty: none of the {len(names)} images that "
                                    f"split file {self.ann_file} lists exists (first: {next(iter(self.skipped))})")
        return found
