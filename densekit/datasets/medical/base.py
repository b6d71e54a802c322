"""The base of densekit's 2-D slice datasets over 3-D volumes (Synapse h5, NIfTI): class metainfo, a small
per-process cache of loaded volumes, and the arrays put into each item."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from mmengine.dataset import BaseDataset

from ...visualization import default_palette
from ..bad_samples import BadSampleMixin
from ..loading import build_pipeline


class VolumeCache:
    """A least-recently-used cache of loaded volumes, keyed by path (one per dataset and worker process)."""

    def __init__(self, maxsize: int | None = 4) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, object] = OrderedDict()

    def get(self, key: str, load: Callable[[], object]) -> object:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if self.maxsize is None or self.maxsize > 0:
            self._items[key] = value
            while self.maxsize is not None and len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class MedicalSliceDataset(BadSampleMixin, BaseDataset):
    """Base of the 2-D slice datasets over 3-D volumes: class metainfo, a volume cache, arrays in ``get_data_info``.

    Subclasses implement ``load_data_list`` (one dict per slice, no arrays) and ``load_arrays(info) -> (image
    (H, W) float32, label (H, W) or None)``. ``get_data_info`` adds ``img``, ``gt_seg_map``, ``ori_shape``
    and ``img_shape`` to a copy of the item, so pipelines start from arrays (no loading transform).

    Args:
        classes: class names, index ``i`` = label value ``i`` (background first); label values outside
            ``[0, len(classes))`` raise ``ValueError`` naming the file and the values.
        palette: one RGB colour per class (generated when None).
        cache_size: volumes kept in memory per process (None: all).
        on_bad_sample: ``'raise'`` (default) or ``'skip'`` a volume that cannot be used (wrong number of
            dimensions, labels out of range), see ``densekit.datasets.bad_samples``; skips are in ``self.skipped``.
        pipeline, test_mode, indices, serialize_data, lazy_init, max_refetch: as ``mmengine``'s ``BaseDataset``.
    """

    METAINFO: dict = dict()

    def __init__(self, classes: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                 cache_size: int | None = 4, data_root: str = "", pipeline: Sequence[dict | Callable] = (),
                 metainfo: dict | None = None, test_mode: bool = False, indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True, lazy_init: bool = False, max_refetch: int = 1000,
                 on_bad_sample: str = "raise") -> None:
        self._init_bad_samples(on_bad_sample)
        meta = dict(metainfo or {})
        if classes is not None:
            meta["classes"] = classes
        if palette is not None:
            meta["palette"] = palette
        self._cache = VolumeCache(cache_size)
        super().__init__(ann_file="", metainfo=meta, data_root=data_root, indices=indices,
                         serialize_data=serialize_data,
                         pipeline=build_pipeline(pipeline),
                         test_mode=test_mode, lazy_init=True, max_refetch=max_refetch)
        self._check_metainfo()
        if not lazy_init:
            self.full_init()

    def _check_metainfo(self) -> None:
        classes = self._metainfo.get("classes")
        if not classes or len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two class names, background first "
                             f"(index i names label value i), got {classes!r}")
        self._metainfo["classes"] = tuple(classes)
        palette = self._metainfo.get("palette") or default_palette(len(classes))
        if len(palette) != len(classes) or any(len(c) != 3 for c in palette):
            raise ValueError(f"palette must hold one RGB triple per class: {len(classes)} classes, "
                             f"got {len(palette)} entries")
        self._metainfo["palette"] = [list(map(int, c)) for c in palette]

    @property
    def num_classes(self) -> int:
        return len(self._metainfo["classes"])

    def load_arrays(self, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        image, label = self.load_arrays(info)
        info["img"] = np.ascontiguousarray(image, dtype=np.float32)
        if label is not None:
            info["gt_seg_map"] = np.ascontiguousarray(label)
        info["ori_shape"] = info["img_shape"] = image.shape[:2]
        return info
