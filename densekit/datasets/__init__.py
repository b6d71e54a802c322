"""Datasets and transforms; importing this package registers them in ``densekit.registry``.

Segmentation: ADE20K, any image/mask folder, the generated demo. Detection: COCO json, PASCAL VOC,
the generated box demo. Medical: Synapse npz/h5 and NIfTI (MSD) volumes as axial slices.
"""
from __future__ import annotations

from . import det_transforms, medical_transforms, transforms
from .ade20k import ADE20K_CLASSES, ADE20K_PALETTE, ADE20KDataset
from .base import SegDataset, default_palette
from .coco import CocoDataset, DatasetWarning
from .demo import DEMO_CLASSES, DEMO_PALETTE, DemoDataset, make_demo_dataset, make_demo_scene
from .demo_det import DEMO_DET_CLASSES, DemoDetDataset, make_demo_det_dataset, make_demo_det_scene
from .nifti import NiftiSliceDataset
from .synapse import SynapseDataset
from .voc import VOC_CLASSES, VOCDataset

__all__ = [
    "ADE20K_CLASSES", "ADE20K_PALETTE", "ADE20KDataset", "CocoDataset", "DEMO_CLASSES", "DEMO_DET_CLASSES",
    "DEMO_PALETTE", "DatasetWarning", "DemoDataset", "DemoDetDataset", "NiftiSliceDataset", "SegDataset",
    "SynapseDataset", "VOCDataset", "VOC_CLASSES", "default_palette", "det_transforms", "make_demo_dataset",
    "make_demo_det_dataset", "make_demo_det_scene", "make_demo_scene", "medical_transforms", "transforms",
]
