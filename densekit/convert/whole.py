"""Whole-model state dicts -> a densekit model's keys: UPerNet segmentors, RPNs, Swin-Unets.

    convert_model(sd, kind, backbone)       dispatch on the model's class name: 'RPN' -> convert_detector; an
                                            official Swin-Unet checkpoint -> swin_unet.convert_swin_unet;
                                            anything else -> convert_segmentor
    convert_segmentor(sd, backbone)         hf: hf.convert_hf_upernet; mmseg/densekit: the backbone part
                                            (convert_backbone_part), heads as they are (densekit's names are mmseg's)
    convert_detector(sd, backbone)          torchvision: torchvision.TORCHVISION_RULES; mmdet 2.x/3.x and
                                            densekit: the backbone part, then mmdet.MMDET_RULES for the rest

``backbone`` says what the target model's backbone is, since the keys alone cannot tell a densekit Swin from
a timm one: ``'swin'`` (a densekit ``SwinTransformer``: the checkpoint's Swin part goes through ``convert_swin``
in whatever layout it is), ``'swinv2'`` (a ``SwinTransformerV2``: ``convert_swin_v2``, any V2 layout),
``'timm'`` (a ``TimmBackbone``, keys under ``backbone.model.``) or ``'vit'`` (a ``ViTBackbone``: the ViT part
goes through ``convert_vit``, e.g. mmseg's ViT-UPerNet, then under ``backbone.model.``). The results are not
yet checked against the model: that is ``fit`` (with ``fit.whole_model_policy``).
"""
from __future__ import annotations

import re

from .convnext import is_mmpretrain_convnext, mmpretrain_convnext_to_timm
from .detect import (
    DETECTOR_LAYOUTS,
    SEGMENTOR_LAYOUTS,
    detect_detector_layout,
    detect_layout,
    detect_segmentor_layout,
    detect_swin_unet_layout,
)
from .hf import convert_hf_upernet
from .io import strip_prefixes
from .mmdet import MMDET_RULES, MMDET_TIMM_BACKBONE_RULES
from .report import CheckpointError, LoadReport
from .rules import BUFFER_RULES, Rule, StateDict, Tensors, apply_rules, part, with_prefix
from .swin import convert_swin
from .swin_unet import SWIN_UNET_PREFIXES, convert_swin_unet
from .swin_v2 import convert_swin_v2, detect_v2_layout
from .torchvision import torchvision_to_densekit
from .twins import is_mmseg_twins, mmseg_twins_to_densekit
from .vit import convert_vit, detect_vit_layout

BACKBONES = ("swin", "swinv2", "timm", "vit")
_HF_EXPLAINED = re.compile(r"^backbone\.(swin\.)?layernorm\.")
_STAGE_NORM = re.compile(r"^norm(\d+)\.")
# A segmentor's non-backbone parts: heads keep their names; recomputable or configured tensors go.
SEGMENTOR_RULES: tuple[Rule, ...] = BUFFER_RULES + (
    Rule(r"^data_preprocessor\.", None, why="taken from the config"),
)


def _absorb(report: LoadReport, other: LoadReport, prefix: str = "", why_prefix: str = "") -> None:
    """Add ``other``'s renames, permutations and drops (keys under ``prefix``) to ``report``."""
    report.renamed += [(prefix + old, prefix + new) for old, new in other.renamed]
    report.permuted += [prefix + key for key in other.permuted]
    report.dropped += [(prefix + key, why_prefix + why) for key, why in other.dropped]


# ----------------------------------------------------------------------------------------- backbone
def convert_backbone_part(state_dict: Tensors, backbone: str, report: LoadReport) -> StateDict:
    """The ``backbone.*`` keys of an mmseg/mmdet-style (or densekit) whole model -> densekit backbone keys.

    Args:
        state_dict: the whole model's tensors; only ``backbone.*`` is read.
        backbone: ``'swin'`` (any Swin layout, ``convert_swin``) or ``'timm'`` (keys kept, buffers dropped; an
            mmpretrain ConvNeXt, mmseg's ConvNeXt UPerNets, through ``convnext.mmpretrain_convnext_to_timm``; mmseg's
            Twins-SVT UPerNets through ``twins.mmseg_twins_to_densekit``).
        report: gains ``backbone_layout`` and the backbone's renames, permutations and drops.

    Raises:
        CheckpointError: the model's backbone is a Swin but the checkpoint's is not.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    tensors = part(state_dict, "backbone.")
    if backbone == "vit":
        return _convert_vit_part(tensors, report)
    for is_layout, convert in ((is_mmpretrain_convnext, mmpretrain_convnext_to_timm),
                               (is_mmseg_twins, mmseg_twins_to_densekit)):
        if backbone == "timm" and is_layout(list(tensors)):
            converted, other = convert(tensors)
            report.backbone_layout = other.layout
            _absorb(report, other, "backbone.")
            return with_prefix(converted, "backbone.")
    if backbone == "timm":
        kept, rules = apply_rules(tensors, BUFFER_RULES)
        report.backbone_layout = "densekit"
        _absorb(report, rules, "backbone.")
        return with_prefix(kept, "backbone.")
    if backbone == "swinv2":
        return _convert_swin_v2_part(tensors, report)
    try:
        layout = detect_layout(tensors)
    except CheckpointError as error:
        raise CheckpointError(f"the config's backbone is a densekit Swin, but the checkpoint's is not: {error}") \
            from error
    converted, swin = convert_swin(tensors, layout)
    report.backbone_layout = layout
    return _with_out_norms(converted, swin, report)


def _with_out_norms(converted: StateDict, swin: LoadReport, report: LoadReport) -> StateDict:
    """A converted Swin backbone part under ``backbone.``, its report absorbed into ``report``. Forks of official
    Swin for segmentation (Swin-Transformer-Semantic-Segmentation) add per-stage ``norm0..3``: densekit's
    ``out_norms``."""
    renamed = {key: _STAGE_NORM.sub(r"out_norms.\1.", key) for key in converted}
    swin.renamed += [(old, new) for old, new in renamed.items() if old != new]
    _absorb(report, swin, "backbone.", why_prefix="backbone ")
    return {"backbone." + renamed[key]: value for key, value in converted.items()}


def _convert_swin_v2_part(tensors: Tensors, report: LoadReport) -> StateDict:
    """A whole model's Swin V2 backbone part (``backbone.`` removed), in any V2 layout -> ``backbone.*`` keys."""
    try:
        layout = detect_v2_layout(tensors)
    except CheckpointError as error:
        raise CheckpointError(f"the config's backbone is a densekit Swin V2, but the checkpoint's is not: {error}") \
            from error
    converted, v2 = convert_swin_v2(tensors, layout)
    report.backbone_layout = layout
    return _with_out_norms(converted, v2, report)


def _convert_vit_part(tensors: Tensors, report: LoadReport) -> StateDict:
    """A whole model's ViT part (``backbone.`` removed), any ``convert_vit`` layout -> ``backbone.model.*`` keys."""
    try:
        layout = detect_vit_layout(tensors)
    except CheckpointError as error:
        raise CheckpointError(f"the config's backbone is a ViT, but the checkpoint's is not: {error}") from error
    converted, vit = convert_vit(tensors, layout)
    report.backbone_layout = layout
    vit.renamed = [(old, "model." + new) for old, new in vit.renamed if old != "model." + new]
    _absorb(report, vit, "backbone.", why_prefix="backbone ")
    report.missing += [("backbone.model." + key, why) for key, why in vit.missing]
    return {"backbone.model." + key: value for key, value in converted.items()}


# ----------------------------------------------------------------------------------------- segmentor
def _renamed_by_identity(source: Tensors, converted: Tensors) -> list[tuple[str, str]]:
    """``(source key, new key)`` for tensors that kept their identity under a new name (HF's table works on
    names only; fused q/k/v tensors are new and not counted)."""
    names = {id(value): key for key, value in source.items()}
    return [(names[id(value)], key) for key, value in converted.items() if names.get(id(value), key) != key]


def _convert_hf(state_dict: Tensors, report: LoadReport) -> StateDict:
    converted, unmapped = convert_hf_upernet(state_dict)
    unexplained = [key for key in unmapped if not _HF_EXPLAINED.search(key)]
    if unexplained:
        raise CheckpointError(f"{len(unexplained)} HuggingFace keys have no densekit counterpart: "
                              + ", ".join(unexplained[:8]))
    report.dropped += [(key, "HF's classifier norm after the last stage, unused by a backbone") for key in unmapped]
    report.backbone_layout = "hf-" + ("swin" if any(".attn.qkv." in k for k in converted) else "convnext")
    report.renamed = _renamed_by_identity(state_dict, converted)
    return converted


def convert_segmentor(state_dict: Tensors, backbone: str, layout: str | None = None
                      ) -> tuple[StateDict, LoadReport]:
    """Rename a whole-UPerNet state dict (``module.`` removed) into densekit's keys.

    Args:
        state_dict: the checkpoint's tensors (``io.read_model_checkpoint``).
        backbone: the target model's backbone (``BACKBONES``).
        layout: one of ``SEGMENTOR_LAYOUTS``; None detects it.

    Returns:
        ``(converted, report)`` with ``kind``, ``layout``, ``backbone_layout``, ``renamed``, ``permuted`` and
        ``dropped`` filled in.
    """
    layout = layout or detect_segmentor_layout(state_dict)
    if layout not in SEGMENTOR_LAYOUTS:
        raise ValueError(f"unknown segmentor layout {layout!r}; expected one of {SEGMENTOR_LAYOUTS}")
    report = LoadReport(kind="segmentor", layout=layout)
    if layout == "hf":
        return _convert_hf(state_dict, report), report
    converted = convert_backbone_part(state_dict, backbone, report)
    rest, rules = apply_rules({k: v for k, v in state_dict.items() if not k.startswith("backbone.")}, SEGMENTOR_RULES)
    _absorb(report, rules)
    return {**converted, **rest}, report


# ----------------------------------------------------------------------------------------------- RPN
def convert_detector(state_dict: Tensors, backbone: str, layout: str | None = None) -> tuple[StateDict, LoadReport]:
    """Rename a whole-RPN state dict (``module.`` removed) into densekit's keys.

    Args:
        state_dict: the checkpoint's tensors.
        backbone: the target model's backbone (``BACKBONES``); with ``'timm'`` an mmdet
            backbone's torchvision names move under ``backbone.model.``.
        layout: one of ``DETECTOR_LAYOUTS``; None detects it (mmdet 3.x's ``bbox_head.*`` included).

    Returns:
        ``(converted, report)`` with ``kind='RPN'``, ``layout``, ``backbone_layout``, ``renamed``, ``permuted``
        and ``dropped`` filled in.
    """
    layout = layout or detect_detector_layout(state_dict)
    if layout not in DETECTOR_LAYOUTS:
        raise ValueError(f"unknown detector layout {layout!r}; expected one of {DETECTOR_LAYOUTS}")
    if layout == "torchvision":
        converted, report = torchvision_to_densekit(state_dict)
        report.kind = "RPN"
        return converted, report
    report = LoadReport(kind="RPN", layout=layout)
    rest = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
    if layout == "mmdet" and backbone == "timm":
        converted, rules = apply_rules({k: v for k, v in state_dict.items() if k.startswith("backbone.")},
                                       MMDET_TIMM_BACKBONE_RULES)
        report.backbone_layout = "mmdet"
        _absorb(report, rules)
    else:
        converted = convert_backbone_part(state_dict, backbone, report)
    heads, rules = apply_rules(rest, MMDET_RULES)
    _absorb(report, rules)
    return {**converted, **heads}, report


# ------------------------------------------------------------------------------------------ dispatch
def convert_model(state_dict: Tensors, kind: str, backbone: str) -> tuple[StateDict, LoadReport]:
    """A whole checkpoint's tensors -> the keys of a densekit model of class ``kind`` (e.g. ``'RPN'``,
    ``'EncoderDecoder'``, ``'SwinUnet'``) whose backbone is ``backbone`` (one of ``BACKBONES``).

    RPNs go through ``convert_detector``; an official Swin-Unet checkpoint through its own key table
    (``convert_swin_unet``); anything else through ``convert_segmentor`` (a densekit Swin-Unet's keys are a
    segmentor's: ``backbone.*`` plus heads).
    """
    if kind == "RPN":
        return convert_detector(state_dict, backbone)
    if detect_swin_unet_layout(strip_prefixes(state_dict, SWIN_UNET_PREFIXES)) == "official":
        return convert_swin_unet(state_dict)
    converted, report = convert_segmentor(state_dict, backbone)
    if kind == "SwinUnet":
        report.kind = "Swin-Unet"
    return converted, report
