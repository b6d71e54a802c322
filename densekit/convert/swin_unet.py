"""Swin-Unet weights: official Swin-Unet checkpoints, and ImageNet Swin mirrored into the decoder.

Official checkpoints (HuCaoFighting/Swin-Unet ``trainer.py``: ``torch.save(model.state_dict())`` of the
``SwinUnet`` wrapper, so keys start with ``swin_unet.``, or ``module.swin_unet.`` after ``nn.DataParallel``)::

    patch_embed.{proj, norm}, [absolute_pos_embed]
    layers.{i}.blocks.{j}.{norm1, attn.relative_position_bias_table, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}
    layers.{i}.blocks.{j}.attn.relative_position_index, .attn_mask (buffers: dropped, recomputed)
    layers.{i}.downsample.{norm, reduction}                 (i < n-1, official [x0, x1, x2, x3] order)
    norm                                                    bottleneck norm
    layers_up.0.{expand, norm}                              PatchExpand of the bottleneck
    concat_back_dim.{k}, layers_up.{k}.blocks.{j}, layers_up.{k}.upsample.{expand, norm}   (k >= 1)
    norm_up, up.{expand, norm}, output                      FinalPatchExpand_X4 and the 1x1 conv

map to densekit's ``SwinUnet`` (``backbone.stages.{i}``, ``norm``, ``decode_head.expand``,
``decode_head.stages.{k-1}.{concat, blocks, upsample}``, ``decode_head.{norm, up, conv_seg}``) by renaming.

ImageNet initialisation reproduces the official ``SwinUnet.load_from``: the encoder gets the Swin
weights (any layout ``densekit.convert`` reads), every ``layers.{i}.*`` weight is also copied to
``layers_up.{n-1-i}.*`` (``n`` = 4 officially: ``3 - int(k[7:8])``), the final ``norm`` becomes the
bottleneck norm, keys whose shape differs from the model's are dropped, and the rest loads non-strictly.
densekit differs in two documented ways: bias tables are resized bicubically to the model's window (the
official code drops them) and a 3-channel patch embedding is summed to ``in_chans`` 1 (which equals the
official wrapper's repeat of a grey image to 3 channels). The report lists every decoder weight that
came from a mirrored encoder stage (``SwinUnetLoadReport.mirrored``).
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from . import BIAS_RESIZE, _adapt_tensor, _log, checkpoint_tensors, convert_swin, detect_layout, read_checkpoint, unwrap
from .common import CheckpointError, LoadReport, Rule, StateDict, Tensors, apply_rules

SWIN_UNET_LAYOUTS = ("official", "densekit")
_BUFFER_RULES: tuple[Rule, ...] = (
    Rule(r"(^|\.)relative_position_index$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)relative_coords_table$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)attn_mask$", None, why="buffer, recomputed"),
)
_OFFICIAL_KEY = re.compile(r"^(layers_up|concat_back_dim|norm_up|up|output)\.")
_DENSEKIT_KEY = re.compile(r"^decode_head\.(expand|stages|up|conv_seg)\.")
# Decoder weights with no encoder counterpart: ImageNet initialisation leaves them random.
_DECODER_ONLY = re.compile(r"^decode_head\.(expand|norm|up|conv_seg)\.|^decode_head\.stages\.\d+\.(concat|upsample)\.")


@dataclass
class SwinUnetLoadReport(LoadReport):
    """``LoadReport`` plus ``mirrored``: ``(checkpoint key, decoder key)`` for each decoder weight that was
    loaded from a mirrored encoder stage (ImageNet initialisation), and ``dataset_meta`` (class names, if any)."""

    mirrored: list[tuple[str, str]] = field(default_factory=list)
    dataset_meta: dict = field(default_factory=dict)  # as SegmentorReport, for densekit.apis.init_model

    def missing_weights(self) -> list[str]:
        """Missing weights other than the decoder parts no Swin checkpoint has (expansions, skip projections,
        decoder norm, classifier): those are expected to stay random after an ImageNet initialisation."""
        return [key for key in self.missing if not _DECODER_ONLY.match(key)]

    def summary(self, limit: int = 3) -> str:
        lines = [super().summary(limit)]
        if self.mirrored:
            more = f", ... (+{len(self.mirrored) - limit})" if len(self.mirrored) > limit else ""
            lines.insert(1, f"  mirrored into the decoder {len(self.mirrored)}: "
                         + ", ".join(f"{a} -> {b}" for a, b in self.mirrored[:limit]) + more)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- key tables
def _up_stage(match: re.Match, context: Mapping[str, object]) -> str:
    return f"decode_head.stages.{int(match.group(1)) - 1}."


OFFICIAL_TO_DENSEKIT: tuple[Rule, ...] = _BUFFER_RULES + (
    Rule(r"^patch_embed\.", "backbone.patch_embed.", why="encoder"),
    Rule(r"^absolute_pos_embed$", "backbone.absolute_pos_embed", why="encoder"),
    Rule(r"^layers\.(\d+)\.", r"backbone.stages.\1.", why="encoder stage"),
    Rule(r"^layers_up\.0\.", "decode_head.expand.", why="PatchExpand of the bottleneck"),
    Rule(r"^layers_up\.(\d+)\.", _up_stage, why="decoder stage"),
    Rule(r"^concat_back_dim\.(\d+)\.", lambda m, c: _up_stage(m, c) + "concat.", why="skip projection"),
    Rule(r"^norm_up\.", "decode_head.norm.", why="decoder norm"),
    Rule(r"^up\.", "decode_head.up.", why="FinalPatchExpand_X4"),
    Rule(r"^output\.", "decode_head.conv_seg.", why="classifier"),
)


def _official_up_stage(match: re.Match, context: Mapping[str, object]) -> str:
    return f"layers_up.{int(match.group(1)) + 1}."


DENSEKIT_TO_OFFICIAL: tuple[Rule, ...] = (
    Rule(r"^backbone\.patch_embed\.", "patch_embed."),
    Rule(r"^backbone\.absolute_pos_embed$", "absolute_pos_embed"),
    Rule(r"^backbone\.stages\.(\d+)\.", r"layers.\1."),
    Rule(r"^decode_head\.expand\.", "layers_up.0."),
    Rule(r"^decode_head\.stages\.(\d+)\.concat\.", lambda m, c: f"concat_back_dim.{int(m.group(1)) + 1}."),
    Rule(r"^decode_head\.stages\.(\d+)\.", _official_up_stage),
    Rule(r"^decode_head\.norm\.", "norm_up."),
    Rule(r"^decode_head\.up\.", "up."),
    Rule(r"^decode_head\.conv_seg\.", "output."),
)


def strip_prefixes(state_dict: Tensors) -> StateDict:
    """Drop ``module.`` (``nn.DataParallel``) and ``swin_unet.`` (the official wrapper) from every key."""
    out: StateDict = {}
    for key, value in state_dict.items():
        new = key[len("module."):] if key.startswith("module.") else key
        new = new[len("swin_unet."):] if new.startswith("swin_unet.") else new
        if new in out:
            raise CheckpointError(f"two checkpoint keys map to {new!r} once prefixes are removed")
        out[new] = value
    return out


def detect_swin_unet_layout(state_dict: Tensors) -> str | None:
    """``'official'`` (``layers_up``/``concat_back_dim``... after prefix removal), ``'densekit'``
    (``decode_head.expand``...) or None (not a Swin-Unet checkpoint: an encoder-only Swin, say)."""
    keys = list(state_dict)
    if any(_DENSEKIT_KEY.match(key) for key in keys):
        return "densekit"
    if any(_OFFICIAL_KEY.match(key) for key in keys):
        return "official"
    return None


def official_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, SwinUnetLoadReport]:
    """Official Swin-Unet state dict (prefixes removed or not) -> densekit ``SwinUnet`` keys (tensors shared)."""
    out, base = apply_rules(strip_prefixes(state_dict), OFFICIAL_TO_DENSEKIT, progress=progress)
    report = SwinUnetLoadReport(layout="official", renamed=base.renamed, dropped=base.dropped)
    return out, report


def densekit_to_official(state_dict: Tensors, prefix: str = "swin_unet.") -> StateDict:
    """densekit ``SwinUnet`` state dict -> the official layout (no buffers), keys prefixed with ``prefix``."""
    out, _ = apply_rules(state_dict, DENSEKIT_TO_OFFICIAL)
    return {prefix + key: value for key, value in out.items()}


# ------------------------------------------------------------------------------ ImageNet mirroring
def _decoder_prefix(up_index: int) -> str:
    """densekit name of the official ``layers_up.{up_index}.``."""
    return "decode_head.expand." if up_index == 0 else f"decode_head.stages.{up_index - 1}."


def mirror_encoder(swin: Tensors, num_stages: int) -> tuple[StateDict, list[tuple[str, str]], list[str]]:
    """densekit Swin weights -> Swin-Unet keys, the official ``load_from`` rule on densekit names.

    Args:
        swin: a densekit Swin state dict (``convert_swin`` output: ``stages.{i}``, ``out_norms.{i}``...).
        num_stages: encoder stages of the target model (``n``; encoder stage ``i`` is mirrored into
            the decoder stage officially named ``layers_up.{n-1-i}``).

    Returns:
        ``(state_dict, mirrored, dropped)``: the encoder keys under ``backbone.``, the checkpoint's last output
        norm as the bottleneck ``norm``, plus a decoder copy of every stage key; ``mirrored`` pairs
        (encoder key, decoder key) for those copies; ``dropped`` the out norms that have no place.
        Copies the model lacks (``downsample``, blocks beyond the decoder's depth) are filtered later,
        as the official ``load_state_dict(strict=False)`` ignores them.
    """
    norms = [int(m.group(1)) for key in swin if (m := re.match(r"^out_norms\.(\d+)\.", key))]
    last = max(norms, default=-1)
    out: StateDict = {}
    mirrored: list[tuple[str, str]] = []
    dropped: list[str] = []
    for key, value in swin.items():
        norm = re.match(r"^out_norms\.(\d+)\.(.*)$", key)
        if norm:
            if int(norm.group(1)) == last:  # official: the classifier's final norm loads into Swin-Unet's `norm`
                out["norm." + norm.group(2)] = value
            else:
                dropped.append(key)
            continue
        out["backbone." + key] = value
        stage = re.match(r"^stages\.(\d+)\.(.*)$", key)
        if stage and num_stages - 1 - int(stage.group(1)) >= 0:
            target = _decoder_prefix(num_stages - 1 - int(stage.group(1))) + stage.group(2)
            out[target] = value
            mirrored.append(("backbone." + key, target))
    return out, mirrored, dropped


# ------------------------------------------------------------------------------------ fit and load
def _fit(state_dict: StateDict, model: nn.Module, report: LoadReport, bias_resize: str,
         drop_misfits: bool) -> StateDict:
    """Keep what fits ``model``: same shape, or resized (bias tables, absolute position embedding, patch
    embedding input channels). ``drop_misfits`` drops the rest (the official ImageNet rule); otherwise it raises."""
    target = model.state_dict()
    out: StateDict = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in state_dict.items():
        if key not in target:
            if drop_misfits:
                report.dropped.append(f"{key} (not in the model)")
            else:
                unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        shape = tuple(target[key].shape)
        if tuple(value.shape) != shape:
            local = key[len("backbone."):] if key.startswith("backbone.") else key
            new = _adapt_tensor(local, value, shape, model.backbone, bias_resize)
            if new is None:
                if drop_misfits:
                    report.dropped.append(f"{key} (shape {tuple(value.shape)}, model {shape})")
                else:
                    mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {shape}")
                continue
            report.resized.append((key, tuple(value.shape), shape))
            value = new
        out[key] = value
    if unexpected or mismatched:
        lines = [f"checkpoint does not fit the {type(model).__name__}:"]
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys: " + ", ".join(unexpected[:8]))
        if mismatched:
            lines.append(f"  {len(mismatched)} shape mismatches: " + "; ".join(mismatched[:8]))
        raise CheckpointError("\n".join(lines))
    return out


def _read(checkpoint: str | os.PathLike | Mapping) -> tuple[Mapping, str]:
    if isinstance(checkpoint, Mapping):
        return checkpoint, ""
    return read_checkpoint(checkpoint), str(checkpoint)


def _finish(model: nn.Module, weights: StateDict, report: LoadReport, source: str, verbose: bool) -> None:
    result = model.load_state_dict(weights, strict=False)
    report.source, report.loaded, report.missing = source, len(weights), list(result.missing_keys)
    if verbose:
        _log(report.summary(), logging.INFO)


def load_swin_unet_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping,
                              bias_resize: str = "bicubic", strict: bool = True, verbose: bool = True,
                              new_classes: bool = False) -> SwinUnetLoadReport:
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
        state_dict = strip_prefixes(checkpoint_tensors(obj))
        layout = detect_swin_unet_layout(state_dict)
        if layout is None:
            raise CheckpointError(f"not a Swin-Unet checkpoint (no layers_up / decode_head keys); first keys: "
                                  f"{list(state_dict)[:5]}")
        if layout == "official":
            converted, report = official_to_densekit(state_dict)
        else:
            converted, base = apply_rules(state_dict, _BUFFER_RULES)
            report = SwinUnetLoadReport(layout="densekit", dropped=base.dropped)
        target = model.state_dict()
        classifier = [k for k in converted if k.startswith("decode_head.conv_seg.") and k in target
                      and converted[k].shape != target[k].shape]
        for key in classifier if new_classes else []:
            converted.pop(key)
            report.dropped.append(f"{key} (a classifier for another number of classes)")
        weights = _fit(converted, model, report, bias_resize, drop_misfits=False)
        missing = [key for key in target if key not in weights and not (new_classes and key in classifier)]
        if strict and missing:
            raise CheckpointError(f"{len(missing)} model weights are not in the checkpoint: {', '.join(missing[:8])}")
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    _finish(model, weights, report, source, verbose)
    return report


def load_imagenet_swin(model: nn.Module, checkpoint: str | os.PathLike | Mapping, bias_resize: str = "bicubic",
                       verbose: bool = True) -> SwinUnetLoadReport:
    """Initialise a densekit ``SwinUnet`` from ImageNet Swin weights as the official ``load_from`` does.

    Any Swin layout ``densekit.convert`` reads (official, timm, mmseg, densekit) is converted to densekit's,
    mirrored (``mirror_encoder``), fitted to the model (bias tables resized, other shape misfits dropped,
    keys the model lacks ignored, all reported) and loaded non-strictly.

    Returns:
        ``SwinUnetLoadReport``: ``mirrored`` lists the decoder weights taken from encoder stages,
        ``missing`` what keeps its random initialisation (decoder expansions, skip projections, classifier).
    """
    if bias_resize not in BIAS_RESIZE:
        raise ValueError(f"bias_resize must be one of {BIAS_RESIZE}, got {bias_resize!r}")
    obj, source = _read(checkpoint)
    try:
        state_dict = unwrap(obj)
        swin, base = convert_swin(state_dict, detect_layout(state_dict))
        merged, mirrored, dropped = mirror_encoder(swin, len(model.backbone.stages))
        report = SwinUnetLoadReport(layout=base.layout, renamed=base.renamed, permuted=base.permuted,
                                    dropped=base.dropped + dropped)
        weights = _fit(merged, model, report, bias_resize, drop_misfits=True)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    origin = {new: old for old, new in base.renamed}
    report.mirrored = [(origin.get(src[len("backbone."):], src[len("backbone."):]), dst)
                       for src, dst in mirrored if dst in weights]
    _finish(model, weights, report, source, verbose)
    return report


def load_swin_unet_pretrained(model: nn.Module, path: str | os.PathLike | Mapping, bias_resize: str = "bicubic",
                              verbose: bool = True) -> SwinUnetLoadReport:
    """What ``SwinUnet(backbone=dict(pretrained=path))`` loads: a whole Swin-Unet checkpoint as it is
    (``load_swin_unet_checkpoint``; a classifier for another number of classes is dropped, as the official
    ``load_from`` does), anything else as ImageNet Swin weights (``load_imagenet_swin``)."""
    obj, source = _read(path)
    try:
        layout = detect_swin_unet_layout(strip_prefixes(checkpoint_tensors(obj)))
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    if layout is not None:
        report = load_swin_unet_checkpoint(model, obj, bias_resize, verbose=False, new_classes=True)
    else:
        report = load_imagenet_swin(model, obj, bias_resize, verbose=False)
    report.source = source
    if verbose:
        _log(report.summary(), logging.INFO)
    return report


__all__ = [
    "DENSEKIT_TO_OFFICIAL", "OFFICIAL_TO_DENSEKIT", "SWIN_UNET_LAYOUTS", "SwinUnetLoadReport", "densekit_to_official",
    "detect_swin_unet_layout", "load_imagenet_swin", "load_swin_unet_checkpoint", "load_swin_unet_pretrained",
    "mirror_encoder", "official_to_densekit", "strip_prefixes",
]
