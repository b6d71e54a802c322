"""Datasets and transforms; importing this package registers them in ``densekit.registry``.

Segmentation: ADE20K, any image/mask folder, the generated demo. Detection: COCO json, PASCAL VOC,
the generated box demo. Medical: Synapse npz/h5 and NIfTI (MSD) volumes as axial slices. ``seg/``, ``det/`` and
``medical/`` never import each other: what they share is in ``loading`` (pipeline building, image reading,
packing) and ``scenes`` (the generated demo scenes).
"""
from __future__ import annotations

from ..visualization import default_palette
from .det import transforms as det_transforms
from .det.coco import CocoDataset, DatasetWarning
from .det.demo import DEMO_DET_CLASSES, DemoDetDataset, make_demo_det_dataset, make_demo_det_scene
from .det.voc import VOC_CLASSES, VOCDataset
from .medical import transforms as medical_transforms
from .medical.nifti import NiftiSliceDataset
from .medical.synapse import SynapseDataset
from .scenes import DEMO_CLASSES
from .seg import transforms
from .seg.ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataset
from .seg.base import SegDataset
from .seg.demo import DEMO_PALETTE, DemoDataset, make_demo_dataset, make_demo_scene

__all__ = [
    "ADE20K_CLASSES", "ADE20K_PALETTE", "ADE20KDataset", "CocoDataset", "DEMO_CLASSES", "DEMO_DET_CLASSES",
    "DEMO_PALETTE", "DatasetWarning", "DemoDataset", "DemoDetDataset", "NiftiSliceDataset", "SegDataset",
    "SynapseDataset", "VOCDataset", "VOC_CLASSES", "default_palette", "det_transforms", "make_demo_dataset",
    "make_demo_det_dataset", "make_demo_det_scene", "make_demo_scene", "medical_transforms", "transforms",
]
