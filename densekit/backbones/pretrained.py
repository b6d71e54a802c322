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
from ..convert.io import checkpoint_tensors, read_checkpoint, safetensors_metadata, strip_prefixes, unwrap
from ..convert.report import CheckpointError
from ..convert.resize import check_bias_resize
from ..convert.rules import StateDict
from ..convert.swin import convert_swin
from ..convert.swin_unet import SWIN_UNET_PREFIXES, convert_swin_unet, imagenet_to_swin_unet
from ..convert.swin_v2 import convert_swin_v2, detect_v2_layout
from ..convert.twins import is_mmseg_twins, mmseg_twins_to_densekit
from ..convert.v2_windows import windows_from_meta, windows_from_name
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
GIVEN = "pretrained_window_size given to the model"


def _stage_text(windows: tuple[int, ...]) -> str:
    return str(windows[0]) if len(set(windows)) == 1 else str(tuple(windows))


def choose_v2_windows(model: nn.Module, checkpoint: Mapping, source: str = "") -> tuple[tuple[int, ...], str, str]:
    """The pretrained windows a Swin V2 load uses: ``(per-stage windows, where they come from, warning)``.

    Explicit wins (the model was built with ``pretrained_window_size``), then the checkpoint's meta or config, then
    the file's name (``convert.v2_windows``); with none, zeros (each stage normalises by the window it uses). The
    warning is non-empty only for a real conflict: given windows other than those the file says.
    """
    stages, patch = len(model.stages), model.patch_size
    try:
        found = windows_from_meta(checkpoint, stages, patch) or (
            windows_from_name(source, stages, patch) if source else None)
    except ValueError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    if getattr(model, "pretrained_window_given", any(model.pretrained_window_size)):
        given = tuple(model.pretrained_window_size)
        if found is None or found[0] == given:
            return given, GIVEN, ""
        return given, GIVEN, (f"WARNING: {found[1]} says pretrained windows {found[0]}, but pretrained_window_size "
                              f"{_stage_text(given)} was given and is used")
    if found is not None:
        return found[0], found[1], ""
    return tuple(model.pretrained_window_size), "", ""


def v2_windows(window: int, pretrained: tuple[int, ...], where: str = "", warning: str = "") -> str:
    """The report line of a Swin V2 load: the window in use, the pretrained windows the position bias is normalised
    by and, when a checkpoint said them, where from; then any conflict."""
    used = ", ".join(str(p) if p else f"{window} (own)" for p in pretrained)
    line = f"window {window}, position-bias coordinates normalised by pretrained windows ({used})"
    if where and where != GIVEN:
        line += f", taken from {where}: the same as pretrained_window_size={_stage_text(pretrained)}"
    return line + (f"; {warning}" if warning else "")


def _v2_meta(obj: Mapping, path: str) -> Mapping:
    # A .safetensors file keeps densekit's meta as string metadata beside the tensors, not in a dict.
    if path.lower().endswith(".safetensors") and os.path.isfile(path):
        return {"meta": safetensors_metadata(path)}
    return obj


def load_pretrained_v2(model: nn.Module, checkpoint: str | os.PathLike | Mapping, verbose: bool = True,
                       progress: bool = True, source: str = "") -> LoadReport:
    """Load a Swin V2 checkpoint (official, timm, HF, mmpretrain, SimMIM or densekit layout) into a densekit
    ``SwinTransformerV2``, and set the pretrained windows its position bias is normalised by (``choose_v2_windows``).

    Nothing is resized: the position bias MLP reads coordinates normalised by the model's
    ``pretrained_window_size``, so a file trained at another window needs those windows, not interpolation.

    ``source`` names a checkpoint given in memory (a path names itself; its name may say the windows).

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
    windows, where, warning = choose_v2_windows(model, _v2_meta(obj, source), source)
    if tuple(windows) != tuple(model.pretrained_window_size):
        model.set_pretrained_window_size(windows)
    report.windows, report.windows_from = v2_windows(model.window_size, windows, where, warning), where
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


# --------------------------------------------------------------------------------------------- Twins-SVT
TWINS_POLICY = FitPolicy(
    may_drop=(Allowance(r"^model\.(norm|head)\.", "classifier head / final norm: not run by a backbone"),),
    may_miss=(Allowance(r"^norm_list\.", "norm_after_stage norms: ImageNet files lack them (unit init)"),)
    + BACKBONE_POLICY.may_miss,
)


def load_twins_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping, verbose: bool = True,
                          progress: bool = True) -> LoadReport:
    """Load a Twins-SVT checkpoint into a densekit ``TwinsSVT``: mmseg's layout (its ImageNet ``alt_gvt_*`` files
    and its UPerNets' ``backbone.*``, through ``convert.twins``) or timm's (``twins_svt_*``, moved under ``model.``).

    Raises:
        CheckpointError: unexpected keys or shapes, named with the file.
    """
    obj, source = _read(checkpoint)
    try:
        state_dict = unwrap(obj)
        if is_mmseg_twins(list(state_dict)):
            converted, report = mmseg_twins_to_densekit(state_dict)
        else:
            converted = {"model." + key: value for key, value in state_dict.items()}
            report = LoadReport(layout="timm", renamed=[(key[len("model."):], key) for key in converted])
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    report.kind = "backbone"
    _fit_and_load(model, converted, report, TWINS_POLICY, source, "bicubic", None, progress)
    if verbose:
        _log(report)
    return report


# ------------------------------------------------------------------------------------------- Swin-Unet
def _pos_grid(model: nn.Module) -> tuple[int, int] | None:
    # A Swin V2 encoder has no absolute position embedding, hence no grid.
    return getattr(model.backbone, "pretrain_grid", None)


def _swin_unet_windows(model: nn.Module, report: LoadReport, source: str) -> None:
    """A Swin V2 Swin-Unet's report says which windows its position bias uses (encoder; the decoder mirrors it)."""
    if getattr(model, "version", 1) == 2:
        report.windows = v2_windows(model.backbone.window_size, tuple(model.backbone.pretrained_window_size), source)


def load_swin_unet_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping,
                              bias_resize: str = "bicubic", strict: bool = True, verbose: bool = True,
                              new_classes: bool = False, source: str = "") -> LoadReport:
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
        source: names a checkpoint given in memory in messages (a path names itself).

    Raises:
        CheckpointError: not a Swin-Unet checkpoint, unexpected keys, shapes that cannot be resized, or
            (``strict``) missing weights; named in the message.
    """
    obj, path = _read(checkpoint)
    source = path or source
    try:
        converted, report = convert_swin_unet(checkpoint_tensors(obj))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    _fit_and_load(model, converted, report, swin_unet_policy(strict, new_classes), source, bias_resize,
                  _pos_grid(model))
    _swin_unet_windows(model, report, source)
    if verbose:
        _log(report)
    return report


def load_imagenet_swin(model: nn.Module, checkpoint: str | os.PathLike | Mapping, bias_resize: str = "bicubic",
                       verbose: bool = True, source: str = "") -> LoadReport:
    """Initialise a densekit ``SwinUnet`` from ImageNet Swin weights as the official ``load_from`` does.

    Any Swin layout ``densekit.convert`` reads for the model's ``version`` (V1: official, timm, mmseg, densekit;
    V2: official, timm, HF, densekit; a file of the other version is refused by name) is converted to densekit's,
    mirrored (``convert.swin_unet.mirror_encoder``), fitted to the model (V1 bias tables resized, other shape
    misfits dropped, keys the model lacks ignored, all reported) and loaded non-strictly.

    ``source`` names a checkpoint given in memory (a path names itself).

    Returns:
        The ``LoadReport``: ``mirrored`` lists the decoder weights taken from encoder stages, ``missing``
        what keeps its random initialisation (decoder expansions, skip projections, classifier).
    """
    check_bias_resize(bias_resize)
    obj, path = _read(checkpoint)
    source = path or source
    try:
        converted, report = imagenet_to_swin_unet(unwrap(obj), len(model.backbone.stages),
                                                  getattr(model, "version", 1))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    _fit_and_load(model, converted, report, SWIN_UNET_IMAGENET_POLICY, source, bias_resize, _pos_grid(model))
    _swin_unet_windows(model, report, source)
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
        report = load_swin_unet_checkpoint(model, obj, bias_resize, verbose=False, new_classes=True, source=source)
    else:
        report = load_imagenet_swin(model, obj, bias_resize, verbose=False, source=source)
    if verbose:
        _log(report)
    return report


__all__ = ["load_imagenet_swin", "load_pretrained", "load_pretrained_v2", "load_state_dict_from", "load_vit_pretrained",
           "load_swin_unet_checkpoint", "load_swin_unet_pretrained"]
