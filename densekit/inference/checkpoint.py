"""Whole-model checkpoints into densekit models: what ``init_model`` loads, in any layout densekit reads.

    read_whole_checkpoint(path)           .pth/.pt/.bin/.ckpt/.safetensors or a HF save_pretrained folder
                                          -> (state dict, dataset_meta), 'module.' removed
    convert_model(sd, kind, backbone)     the model's family decides: RPN (torchvision, mmdet 2.x/3.x,
                                          densekit), official Swin-Unet, or segmentor (HF, mmseg, densekit)
    fit(..., whole_model_policy(...))     strict, except what a whole checkpoint may lack or add (BatchNorm
                                          step counters, an auxiliary head on one side only), all reported

Anything else that does not fit raises ``CheckpointError`` naming the keys, and the fix where the cause is a
known config mismatch (another architecture, ``out_norm``, ``num_classes``, anchors).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from ..backbones.swin import SwinTransformer
from ..backbones.swin_v2 import SwinTransformerV2
from ..backbones.vit import ViTBackbone
from ..convert.fit import fit, whole_model_policy
from ..convert.io import read_whole_checkpoint
from ..convert.report import CheckpointError, LoadReport
from ..convert.whole import convert_model
from ..models.builder import build_model


def backbone_family(model: nn.Module) -> str:
    """What ``convert.whole`` needs to know of a model's backbone: ``'swin'`` (densekit's ``SwinTransformer``,
    which reads any Swin layout), ``'swinv2'`` (``SwinTransformerV2``, any V2 layout), ``'vit'`` (a
    ``ViTBackbone``, which reads any ViT layout) or ``'timm'`` (a ``TimmBackbone``, keys under ``backbone.model.``)."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, SwinTransformerV2):
        return "swinv2"
    if isinstance(backbone, ViTBackbone):
        return "vit"
    return "swin" if isinstance(backbone, SwinTransformer) else "timm"


def load_model_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping, source: str = "",
                          bias_resize: str = "bicubic", unsafe_load: bool = False) -> LoadReport:
    """Load a whole-model checkpoint in any supported layout into a densekit model, strictly.

    UPerNet (``EncoderDecoder``): mmsegmentation, HuggingFace ``UperNetForSemanticSegmentation`` or densekit.
    ``RPN``: mmdetection 2.x (``rpn_head.*``) or 3.x (``bbox_head.*``), torchvision Faster R-CNN (its RPN; the
    second stage dropped) or densekit. ``SwinUnet``: official Swin-Unet or densekit.

    Args:
        model: the target model (its class and backbone pick the converter).
        checkpoint: a path (file or HF folder), or a checkpoint already in memory.
        source: where it came from, for messages (defaults to the path).
        bias_resize: ``'bicubic'`` or ``'geometric'`` for Swin bias tables of another window.
        unsafe_load: unpickle a ``.pth`` fully (``weights_only=False``); only for files you trust.

    Returns:
        The ``LoadReport``, with ``dataset_meta`` from the checkpoint (if any).

    Raises:
        FileNotFoundError, CheckpointError: unreadable file, unknown layout, or a checkpoint that does not fit
            the model; messages name the file and keys.
    """
    state_dict, meta, source = read_whole_checkpoint(checkpoint, source, unsafe_load)
    kind, target = type(model).__name__, model.state_dict()
    try:
        converted, report = convert_model(state_dict, kind, backbone_family(model))
        weights = fit(converted, target, report, whole_model_policy(converted, target), kind, bias_resize,
                      getattr(getattr(model, "backbone", None), "pretrain_grid", None))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    model.load_state_dict(weights, strict=False)  # strictness was checked by the fit, with explanations
    report.source, report.loaded, report.dataset_meta = source, len(weights), meta
    return report


def check_checkpoint_fits(cfg, checkpoint: str | os.PathLike, unsafe_load: bool = False) -> LoadReport:
    """Load ``checkpoint`` strictly into a fresh model of ``cfg`` (random init, nothing downloaded) and return
    the report: commands that hand the file to mmengine's Runner (whose ``load_from`` loads non-strictly, so a
    checkpoint of another model would evaluate random weights) call this first, before any work dir exists.

    Raises:
        FileNotFoundError, CheckpointError: as ``load_model_checkpoint``.
    """
    return load_model_checkpoint(build_model(cfg, pretrained=False), checkpoint, unsafe_load=unsafe_load)


__all__ = ["backbone_family", "check_checkpoint_fits", "load_model_checkpoint"]
