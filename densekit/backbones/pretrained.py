"""What a Swin backbone's ``pretrained=`` loads: into a ``SwinTransformer``, or into a Swin-Unet built on one.

Every loader here is the same four steps over ``densekit.convert``, with its own ``FitPolicy``::

    read_checkpoint / unwrap      the file's state dict ('module.' / 'backbone.' / 'swin_unet.' removed)
    detect + convert              densekit keys (convert_swin, imagenet_to_swin_unet, convert_swin_unet)
    fit(converted, model.state_dict(), report, policy)    resized, checked, explained (convert/fit.py)
    model.load_state_dict(weights, strict=False)          strictness was decided by the policy

The models are read by duck typing (``state_dict``, ``load_state_dict``, ``pretrain_grid``, a Swin-Unet's
``backbone.stages``), so this module imports no network class.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from mmengine.logging import print_log
from torch import nn

from ..convert import LoadReport
from ..convert.detect import detect_layout, detect_swin_unet_layout
from ..convert.fit import (
    BACKBONE_POLICY,
    SWIN_UNET_IMAGENET_POLICY,
    Allowance,
    FitPolicy,
    fit,
    swin_unet_policy,
)
from ..convert.io import checkpoint_tensors, read_checkpoint, strip_prefixes, unwrap
from ..convert.report import CheckpointError
from ..convert.resize import check_bias_resize
from ..convert.rules import StateDict
from ..convert.swin import convert_swin
from ..convert.swin_unet import SWIN_UNET_PREFIXES, convert_swin_unet, imagenet_to_swin_unet
from ..convert.swin_v2 import convert_swin_v2, detect_v2_layout
from ..convert.vit import convert_vit, detect_vit_layout


def _fit_and_load(model: nn.Module, converted: StateDict, report: LoadReport, policy: FitPolicy, source: str,
                  bias_resize: str, pos_grid: tuple[int, int] | None, progress: bool = False) -> LoadReport:
    """``fit`` under ``policy`` (errors prefixed with ``source``), then load non-strictly."""
    try:
        weights = fit(converted, model.state_dict(), report, policy, type(model).__name__, bias_resize, pos_grid,
                      progress)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    model.load_state_dict(weights, strict=False)
    report.source, report.loaded = source, len(weights)
    return report


def _log(report: LoadReport) -> None:
    # mmengine's current logger: the same stream as a Runner's training log.
    level = logging.WARNING if report.missing_weights() else logging.INFO
    print_log(report.summary(), logger="current", level=level)


def _read(checkpoint: str | os.PathLike | Mapping) -> tuple[Mapping, str]:
    if isinstance(checkpoint, Mapping):
        return checkpoint, ""
    return read_checkpoint(checkpoint), str(checkpoint)


# ----------------------------------------------------------------------------------------- Swin backbone
def load_state_dict_from(model: nn.Module, checkpoint: Mapping, source: str = "", bias_resize: str = "bicubic",
                         verbose: bool = True, progress: bool = True) -> LoadReport:
    """``load_pretrained`` on a checkpoint already in memory (what ``read_checkpoint`` returns).

    Args:
        model: a densekit ``SwinTransformer``.
        checkpoint: a state dict or any wrapper ``unwrap`` understands.
        source: where it came from, for messages and the report.
        bias_resize, verbose, progress: as in ``load_pretrained``.
    """
    check_bias_resize(bias_resize)
    try:
        state_dict = unwrap(checkpoint)
        converted, report = convert_swin(state_dict, detect_layout(state_dict), progress=progress)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    report.kind = "backbone"
    _fit_and_load(model, converted, report, BACKBONE_POLICY, source, bias_resize, model.pretrain_grid, progress)
    if verbose:
        _log(report)
    return report


def load_pretrained(model: nn.Module, path: str | os.PathLike, bias_resize: str = "bicubic", verbose: bool = True,
                    progress: bool = True) -> LoadReport:
    """Load a Swin checkpoint in any supported layout into a densekit ``SwinTransformer``.

    Args:
        model: the target model; its window, ``pretrain_grid`` and ``in_chans`` decide the resizing.
        path: ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt``.
        bias_resize: ``'bicubic'`` (official Swin, default) or ``'geometric'`` (timm) for bias tables.
        verbose: log ``report.summary()`` through mmengine's logger.
        progress: tqdm bars over the keys (shown only on a terminal).

    Returns:
        The ``LoadReport``; missing keys (e.g. ``out_norms.0-2`` from ImageNet weights) do not fail.

    Raises:
        FileNotFoundError, CheckpointError: unreadable file, unknown layout, unexpected keys or
            shapes that cannot be resized; messages name the file and keys.
    """
    check_bias_resize(bias_resize)  # before reading a large file
    return load_state_dict_from(model, read_checkpoint(path), str(path), bias_resize, verbose, progress)


# -------------------------------------------------------------------------------------- Swin V2 backbone
# Release names say the window a file was trained at: swinv2_tiny_patch4_window8_256, ..._window12to16_192to256
# (fine-tuned at 16: the last number).
_FILE_WINDOW = re.compile(r"window(\d+)(?:to(\d+))?")


def v2_windows(window: int, pretrained: tuple[int, ...], source: str = "") -> str:
    """The report line of a Swin V2 load: the window in use, the pretrained windows the position bias is normalised
    by, and a warning when the file's name says it was trained at another window that the model does not use."""
    used = ", ".join(str(p) if p else f"{window} (own)" for p in pretrained)
    line = f"window {window}, position-bias coordinates normalised by pretrained windows ({used})"
    match = _FILE_WINDOW.search(os.path.basename(source))
    if match:
        trained = int(match.group(2) or match.group(1))
        if trained != window and not any(pretrained):
            line += (f"; WARNING: the file name says window {trained}: pass pretrained_window_size={trained} to run "
                     f"it at window {window} as the official code does")
    return line


def load_pretrained_v2(model: nn.Module, checkpoint: str | os.PathLike | Mapping, verbose: bool = True,
                       progress: bool = True, source: str = "") -> LoadReport:
    """Load a Swin V2 checkpoint (official, timm, HF or densekit layout) into a densekit ``SwinTransformerV2``.

    Nothing is resized: the position bias MLP reads coordinates normalised by the model's
    ``pretrained_window_size``, so a file trained at another window needs that argument, not interpolation.

    ``source`` names a checkpoint given in memory (a path names itself).

    Raises:
        CheckpointError: a Swin V1 file (refused by name), unknown layout, unexpected keys or shapes.
    """
    obj, path = _read(checkpoint)
    source = path or source
    try:
        state_dict = unwrap(obj)
        converted, report = convert_swin_v2(state_dict, detect_v2_layout(state_dict), progress=progress)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    report.kind = "backbone"
    _fit_and_load(model, converted, report, BACKBONE_POLICY, source, "bicubic", None, progress)
    report.windows = v2_windows(model.window_size, tuple(model.pretrained_window_size), source)
    if verbose:
        _log(report)
    return report


# ------------------------------------------------------------------------------------------------- ViT
def vit_policy(depth: int) -> FitPolicy:
    """``BACKBONE_POLICY`` for a ``ViTBackbone`` that keeps ``depth`` blocks: the blocks after its last returned one
    and a final norm it does not apply were pruned, so their checkpoint tensors are dropped (reported)."""
    return FitPolicy(
        may_drop=(Allowance(r"^model\.norm\.", "final norm, not applied (final_norm=False or last block not returned)"),
                  Allowance(rf"^model\.blocks\.(?!({'|'.join(map(str, range(depth)))})\.)\d+\.",
                            "a block after the last returned one: never run")),
        may_miss=BACKBONE_POLICY.may_miss,
    )


def load_vit_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping, verbose: bool = True,
                        progress: bool = True, source: str = "") -> LoadReport:
    """Load a ViT checkpoint (official MAE, DINO, DINOv2, timm, mmseg ``VisionTransformer`` / ``MAE``, densekit)
    into a densekit ``ViTBackbone``; its position embedding is resized to the model's ``img_size`` grid as MAE and
    mmseg do (``convert.resize.resize_vit_pos_embed``).

    Raises:
        CheckpointError: unknown layout, unexpected keys or shapes that cannot be resized, named.
    """
    obj, path = _read(checkpoint)
    source = path or source
    try:
        state_dict = unwrap(obj)
        converted, report = convert_vit(state_dict, detect_vit_layout(state_dict), progress=progress)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    converted = {"model." + key: value for key, value in converted.items()}
    # Every key moves under model.: record the source name of each (fit names checkpoint keys in its messages).
    origin = {"model." + new: old for old, new in report.renamed}
    report.renamed = [(origin.get(key, key[len("model."):]), key) for key in converted]
    report.renamed = [(old, new) for old, new in report.renamed if old != new]
    report.missing = [("model." + key, why) for key, why in report.missing]
    report.kind = "backbone"
    _fit_and_load(model, converted, report, vit_policy(len(model.model.blocks)), source, "bicubic",
                  model.pretrain_grid, progress)
    if verbose:
        _log(report)
    return report


# ------------------------------------------------------------------------------------------- Swin-Unet
def load_swin_unet_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping,
                              bias_resize: str = "bicubic", strict: bool = True, verbose: bool = True,
                              new_classes: bool = False) -> LoadReport:
    """Load a whole Swin-Unet checkpoint (official or densekit layout) into a densekit ``SwinUnet``.

    Args:
        model: the target ``SwinUnet``.
        checkpoint: a path (``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors``) or a loaded dict, plain or
            wrapped (``{'model'|'state_dict'|'module': ...}``), with ``swin_unet.``/``module.`` prefixes or not.
        bias_resize: ``'bicubic'`` or ``'geometric'`` for bias tables of another window.
        strict: raise when model weights are missing from the checkpoint.
        new_classes: a classifier (``output`` / ``conv_seg``) for another number of classes is dropped and
            reported, and the model's keeps its initialisation (fine-tuning; the official ``load_from``
            always drops it), instead of raising.

    Raises:
        CheckpointError: not a Swin-Unet checkpoint, unexpected keys, shapes that cannot be resized, or
            (``strict``) missing weights; named in the message.
    """
    obj, source = _read(checkpoint)
    try:
        converted, report = convert_swin_unet(checkpoint_tensors(obj))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    _fit_and_load(model, converted, report, swin_unet_policy(strict, new_classes), source, bias_resize,
                  model.backbone.pretrain_grid)
    if verbose:
        _log(report)
    return report


def load_imagenet_swin(model: nn.Module, checkpoint: str | os.PathLike | Mapping, bias_resize: str = "bicubic",
                       verbose: bool = True) -> LoadReport:
    """Initialise a densekit ``SwinUnet`` from ImageNet Swin weights as the official ``load_from`` does.

    Any Swin layout ``densekit.convert`` reads (official, timm, mmseg, densekit) is converted to densekit's,
    mirrored (``convert.swin_unet.mirror_encoder``), fitted to the model (bias tables resized, other shape
    misfits dropped, keys the model lacks ignored, all reported) and loaded non-strictly.

    Returns:
        The ``LoadReport``: ``mirrored`` lists the decoder weights taken from encoder stages, ``missing``
        what keeps its random initialisation (decoder expansions, skip projections, classifier).
    """
    check_bias_resize(bias_resize)
    obj, source = _read(checkpoint)
    try:
        converted, report = imagenet_to_swin_unet(unwrap(obj), len(model.backbone.stages))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    _fit_and_load(model, converted, report, SWIN_UNET_IMAGENET_POLICY, source, bias_resize,
                  model.backbone.pretrain_grid)
    if verbose:
        _log(report)
    return report


def load_swin_unet_pretrained(model: nn.Module, path: str | os.PathLike | Mapping, bias_resize: str = "bicubic",
                              verbose: bool = True) -> LoadReport:
    """What ``SwinUnet(backbone=dict(pretrained=path))`` loads: a whole Swin-Unet checkpoint as it is
    (``load_swin_unet_checkpoint``; a classifier for another number of classes is dropped, as the official
    ``load_from`` does), anything else as ImageNet Swin weights (``load_imagenet_swin``)."""
    obj, source = _read(path)
    try:
        layout = detect_swin_unet_layout(strip_prefixes(checkpoint_tensors(obj), SWIN_UNET_PREFIXES))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    if layout is not None:
        report = load_swin_unet_checkpoint(model, obj, bias_resize, verbose=False, new_classes=True)
    else:
        report = load_imagenet_swin(model, obj, bias_resize, verbose=False)
    report.source = source
    if verbose:
        _log(report)
    return report


__all__ = ["load_imagenet_swin", "load_pretrained", "load_pretrained_v2", "load_state_dict_from", "load_vit_pretrained",
           "load_swin_unet_checkpoint", "load_swin_unet_pretrained"]
