"""Whole UPerNet checkpoints -> a densekit ``EncoderDecoder``: mmsegmentation, HuggingFace or densekit layout.

``convert_segmentor_file(src, dst, config)`` is ``tools/convert.py SRC DST --config CONFIG``;
``load_segmentor_checkpoint(model, path)`` is what ``densekit.apis.init_model`` loads with::

    read_segmentor_checkpoint(path)    .pth/.pt/.bin/.ckpt/.safetensors, or a HF save_pretrained folder
                                       -> (state dict, dataset_meta), 'module.' prefixes removed
    detect_segmentor_layout(sd)        'hf' | 'mmseg' | 'densekit'
    convert_segmentor_state_dict(...)  hf: hf_upernet.convert_hf_upernet; mmseg: the backbone part through
                                       densekit's Swin converters (mmseg, or official/timm as some forks
                                       store it), heads as they are (densekit's head names are mmseg's)
    fit_segmentor_state_dict(...)      strict: every model key filled and every checkpoint key used, except
                                       the explained ones below; Swin bias tables resized to the window

Explained and allowed: recomputable buffers and HF's classifier norm are dropped; an auxiliary head the
config lacks is dropped, one the checkpoint lacks keeps its initialisation (it only adds a training
loss); BatchNorm ``num_batches_tracked`` counters may be absent. Anything else that does not fit
raises ``CheckpointError`` naming the keys (and the fix, where it is a known config mismatch).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..fileio import save_atomically
from . import _adapt_tensor, checkpoint_tensors, convert_swin, detect_layout, read_checkpoint
from .common import DROP_RULES, CheckpointError, StateDict
from .hf_upernet import convert_hf_upernet

SEGMENTOR_LAYOUTS = ("hf", "mmseg", "densekit")
_HF_KEY = re.compile(r"^backbone\.(swin\.|embeddings\.|encoder\.|hidden_states_norms\.)"
                     r"|^(decode_head|auxiliary_head)\.classifier\.|\.batch_norm\.")
_BUFFER = re.compile(r"(^|\.)(relative_position_index|relative_coords_table|attn_mask)$")
_HF_EXPLAINED = re.compile(r"^backbone\.(swin\.)?layernorm\.")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
_STAGE_NORM = re.compile(r"^norm(\d+)\.")


@dataclass
class SegmentorReport:
    """What loading a whole-segmentor checkpoint did.

    Attributes:
        source: the checkpoint path.
        layout: ``'hf'``, ``'mmseg'`` or ``'densekit'`` (``SEGMENTOR_LAYOUTS``).
        backbone_layout: the backbone part's layout (``'hf-swin'``, ``'hf-convnext'``, a Swin layout of
            ``densekit.convert.LAYOUTS``, or ``'densekit'`` for a timm backbone).
        renamed: keys whose name changed.
        permuted: model keys whose values were reordered (mmseg patch-merging channels).
        resized: ``(model key, checkpoint shape, model shape)``.
        dropped: ``(checkpoint key, why)`` for keys not loaded.
        missing: ``(model key, why)`` for model keys left at their initialisation.
        loaded: tensors copied into the model.
        dataset_meta: class names / palette found in the checkpoint (mmseg ``meta``, HF ``id2label``).
        kind: ``'segmentor'``, or ``'RPN'`` for ``densekit.convert.detector``.
    """

    source: str = ""
    layout: str = ""
    backbone_layout: str = ""
    renamed: int = 0
    permuted: list[str] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    loaded: int = 0
    dataset_meta: dict = field(default_factory=dict)
    kind: str = "segmentor"

    def summary(self, limit: int = 3) -> str:
        """A few lines: counts, and per reason the first ``limit`` keys."""
        lines = [f"densekit: loaded {self.loaded} tensors ({self.layout} {self.kind}, {self.backbone_layout} backbone)"
                 + (f" from {self.source}" if self.source else "") + f", {self.renamed} renamed"]
        if self.permuted:
            lines.append(f"  permuted {len(self.permuted)}: {', '.join(self.permuted[:limit])}")
        if self.resized:
            lines.append(f"  resized {len(self.resized)}: "
                         + ", ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.resized[:limit]))
        for name, items in (("dropped", self.dropped), ("missing", self.missing)):
            reasons: dict[str, list[str]] = {}
            for key, why in items:
                reasons.setdefault(why, []).append(key)
            for why, keys in reasons.items():
                more = f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
                lines.append(f"  {name} {len(keys)} ({why}): {', '.join(keys[:limit])}{more}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- reading
def _dataset_meta(meta: object) -> dict:
    """Class names and palette from mmengine (``dataset_meta``) or mmseg 0.x (``CLASSES``/``PALETTE``) meta."""
    if not isinstance(meta, Mapping):
        return {}
    if isinstance(meta.get("dataset_meta"), Mapping):
        return dict(meta["dataset_meta"])
    found = {}
    if meta.get("CLASSES"):
        found["classes"] = list(meta["CLASSES"])
    if meta.get("PALETTE"):
        found["palette"] = [list(color) for color in meta["PALETTE"]]
    return found


def _hf_folder(path: Path) -> tuple[Path, dict]:
    """The weights file of a HF ``save_pretrained`` folder and class names from its ``config.json``."""
    weights = next((path / name for name in _HF_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path} is a folder without {' or '.join(_HF_FILES)} (sharded HF checkpoints are "
                              "not supported: save_pretrained(..., max_shard_size='10GB') writes one file)")
    meta = {}
    config = path / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            meta["classes"] = [id2label[k] for k in sorted(id2label, key=int)]
    return weights, meta


def _unwrap(obj: Mapping) -> StateDict:
    """The tensors of ``obj['state_dict' | 'model' | 'module']`` (nested too), without DDP's ``module.``."""
    tensors = checkpoint_tensors(obj)
    if all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def read_segmentor_checkpoint(path: str | os.PathLike, unsafe_load: bool = False) -> tuple[StateDict, dict]:
    """Read a whole-segmentor checkpoint file (or HF folder) into ``(state dict, dataset_meta)``.

    densekit ``.safetensors`` files keep their meta as JSON under the ``densekit_meta`` metadata key.

    Raises:
        FileNotFoundError, CheckpointError: as ``read_checkpoint``, naming the file.
    """
    path = Path(path)
    meta: dict = {}
    if path.is_dir():
        path, meta = _hf_folder(path)
    checkpoint = read_checkpoint(path, unsafe_load)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("densekit_meta")
        meta = _dataset_meta(json.loads(stored)) if stored else meta
    else:
        meta = _dataset_meta(checkpoint.get("meta")) or meta
    try:
        return _unwrap(checkpoint), meta
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error


# ------------------------------------------------------------------------------ detect and convert
def detect_segmentor_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'hf'`` (HF ``UperNetForSemanticSegmentation`` names), ``'mmseg'`` (an mmseg-style segmentor whose
    backbone is not in densekit's layout) or ``'densekit'``; the backbone part decides between the last two."""
    keys = list(state_dict)
    if not any(key.startswith("decode_head.") for key in keys):
        raise CheckpointError("not a segmentor checkpoint: no decode_head.* keys (a backbone-only checkpoint? "
                              f"convert it with --model instead); first keys: {keys[:5]}")
    if any(_HF_KEY.search(key) for key in keys):
        return "hf"
    if any(key.startswith("backbone.downsample_layers.") for key in keys):
        raise CheckpointError("an mmseg/mmpretrain ConvNeXt segmentor (backbone.downsample_layers.*): not a layout "
                              "densekit converts; convert HuggingFace's UperNet-ConvNeXt checkpoint instead")
    backbone = {key[len("backbone."):]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    try:
        return "densekit" if detect_layout(backbone) == "densekit" else "mmseg"
    except CheckpointError:  # not a Swin: a timm backbone, whose keys are densekit's own
        return "densekit"


def _drop_reason(key: str) -> str:
    """Why densekit's Swin converters dropped a backbone key (their rule's ``why``)."""
    return next((f"backbone {rule.why}" for rule in DROP_RULES if re.search(rule.pattern, key)), "dropped")


def _convert_backbone(state_dict: StateDict, backbone: nn.Module,
                      report: SegmentorReport) -> StateDict:
    """``backbone.*`` keys of an mmseg-style (or densekit) segmentor -> densekit backbone keys."""
    from ..backbones.swin import SwinTransformer

    part = {key[len("backbone."):]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    if not isinstance(backbone, SwinTransformer):
        report.backbone_layout = "densekit"
        for key in [k for k in part if _BUFFER.search(k)]:
            part.pop(key)
            report.dropped.append((f"backbone.{key}", "buffer, recomputed"))
        return {f"backbone.{key}": value for key, value in part.items()}
    try:
        layout = detect_layout(part)
    except CheckpointError as error:
        raise CheckpointError(f"the config's backbone is a densekit Swin, but the checkpoint's is not: {error}") \
            from error
    converted, swin_report = convert_swin(part, layout)
    report.backbone_layout = layout
    report.permuted += [f"backbone.{key}" for key in swin_report.permuted]
    report.dropped += [(f"backbone.{key}", _drop_reason(key)) for key in swin_report.dropped]
    # Forks of official Swin for segmentation (Swin-Transformer-Semantic-Segmentation) add norm0..3.
    return {"backbone." + _STAGE_NORM.sub(r"out_norms.\1.", key): value for key, value in converted.items()}


def convert_segmentor_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                                 layout: str | None = None) -> tuple[StateDict, SegmentorReport]:
    """Rename a whole-segmentor state dict into ``model``'s keys (a function of the keys and the model type).

    Args:
        state_dict: unwrapped (``read_segmentor_checkpoint``).
        model: the target ``EncoderDecoder``; its backbone type picks the backbone converter.
        layout: one of ``SEGMENTOR_LAYOUTS``; None detects it.

    Returns:
        ``(converted, report)`` with ``layout``, ``backbone_layout``, ``renamed``, ``permuted`` and
        ``dropped`` filled in. Not yet checked against the model (``fit_segmentor_state_dict``).
    """
    layout = layout or detect_segmentor_layout(state_dict)
    if layout not in SEGMENTOR_LAYOUTS:
        raise ValueError(f"unknown segmentor layout {layout!r}; expected one of {SEGMENTOR_LAYOUTS}")
    report = SegmentorReport(layout=layout)
    if layout == "hf":
        converted, unmapped = convert_hf_upernet(state_dict)
        unexplained = [key for key in unmapped if not _HF_EXPLAINED.search(key)]
        if unexplained:
            raise CheckpointError(f"{len(unexplained)} HuggingFace keys have no densekit counterpart: "
                                  + ", ".join(unexplained[:8]))
        report.dropped += [(key, "HF's classifier norm after the last stage, unused by a backbone") for key in unmapped]
        report.backbone_layout = "hf-" + ("swin" if any(".attn.qkv." in k for k in converted) else "convnext")
    else:
        converted = _convert_backbone(dict(state_dict), model.backbone, report)
        for key, value in state_dict.items():
            if key.startswith("backbone."):
                continue
            if _BUFFER.search(key) or key.startswith("data_preprocessor."):
                report.dropped.append((key, "buffer, recomputed or taken from the config"))
                continue
            converted[key] = value
    sources = {id(value): key for key, value in state_dict.items()}
    report.renamed = sum(sources.get(id(value), key) != key for key, value in converted.items())
    return converted, report


# ------------------------------------------------------------------------------------- fit and load
# Keys only one model family has: (family, its densekit class, key prefix).
_FAMILIES = (
    ("Swin-Unet", "SwinUnet", "decode_head.expand."),
    ("RPN", "RPN", "rpn_head."),
    ("UPerNet", "EncoderDecoder", "decode_head.psp_modules."),
)


def architecture(keys: Iterable[str]) -> tuple[str, str] | None:
    """``(family, densekit class)`` a state dict's keys belong to, e.g. ``('Swin-Unet', 'SwinUnet')``."""
    keys = list(keys)
    for family, cls, prefix in _FAMILIES:
        if any(key.startswith(prefix) for key in keys):
            return family, cls
    return None


def _architecture_hint(model: nn.Module, checkpoint_keys: Iterable[str]) -> str | None:
    found = architecture(checkpoint_keys)
    if found is None or found[1] == type(model).__name__:
        return None
    return (f"this is a {found[0]} checkpoint ({found[1]}) but the config builds {type(model).__name__}: "
            f"use a {found[0]} config (configs/*.py) or a checkpoint of this model")


def _hints(model: nn.Module, unexpected: list[str], missing: list[str], mismatched: list[str]) -> list[str]:
    """Known config mismatches behind a misfit, and their fix."""
    hints = []
    family = _architecture_hint(model, [key.split(" ")[0] for key in unexpected])
    if family:
        return [family]  # the other hints would only be symptoms of it
    has_norms = getattr(model.backbone, "out_norms", None) is not None
    if not has_norms and any(key.startswith("backbone.out_norms.") for key in unexpected):
        hints.append("the checkpoint normalises every backbone output (HF hidden_states_norms, mmseg norm0..3): "
                     "set out_norm=True in the config's backbone")
    if has_norms and any(key.startswith("backbone.out_norms.") for key in missing):
        hints.append("the checkpoint has no per-stage output norms: set out_norm=False in the config's backbone")
    if any(".rpn_cls." in key or ".rpn_reg." in key for key in mismatched):
        hints.append("the RPN head's anchors per location differ: set the anchor generator's scales and ratios "
                     "to the checkpoint's (mmdet and torchvision: scales=[8], ratios=[0.5, 1.0, 2.0])")
    if any(".conv_seg." in key for key in mismatched):
        hints.append("the classifier (conv_seg) differs in size: set num_classes to the checkpoint's")
    if sum(key.startswith("backbone.") for key in unexpected + missing) > 4:
        hints.append("many backbone keys differ: is the config's backbone the checkpoint's (e.g. swin_t vs swin_b)?")
    return hints


def _misfit(model: nn.Module, unexpected: list[str], missing: list[str], mismatched: list[str],
            limit: int = 8) -> CheckpointError:
    lines = ["checkpoint does not fit the config's model:"]
    for name, items in (("unexpected keys (no such parameter in the model)", unexpected),
                        ("missing keys (model parameters the checkpoint lacks)", missing),
                        ("shape mismatches", mismatched)):
        if items:
            lines.append(f"  {len(items)} {name}: " + "; ".join(items[:limit])
                         + (f"; ... (+{len(items) - limit})" if len(items) > limit else ""))
    lines += [f"  hint: {hint}" for hint in _hints(model, unexpected, missing, mismatched)]
    return CheckpointError("\n".join(lines))


def _fit_key(key: str, value: torch.Tensor, target: dict[str, torch.Tensor], model: nn.Module,
             bias_resize: str, report: SegmentorReport) -> torch.Tensor | None:
    """``value`` in the model's shape (Swin bias tables / position embedding resized), or None if it cannot be."""
    shape = tuple(target[key].shape)
    if tuple(value.shape) == shape:
        return value
    if not key.startswith("backbone."):
        return None
    new = _adapt_tensor(key[len("backbone."):], value, shape, model.backbone, bias_resize)
    if new is None:
        return None
    report.resized.append((key, tuple(value.shape), shape))
    return new


def fit_segmentor_state_dict(converted: StateDict, model: nn.Module, report: SegmentorReport,
                             bias_resize: str = "bicubic") -> StateDict:
    """Check ``converted`` against ``model`` key by key; ``report`` gains ``resized``, ``dropped``, ``missing``.

    Raises:
        CheckpointError: unexplained unexpected or missing keys, or shapes that cannot be resized,
            named with both shapes and a hint where the cause is a known config mismatch.
    """
    target = model.state_dict()
    has_aux = getattr(model, "auxiliary_head", None) is not None  # an RPN has none
    ckpt_aux = any(key.startswith("auxiliary_head.") for key in converted)
    out: StateDict = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in converted.items():
        if key not in target:
            if key.startswith("auxiliary_head.") and not has_aux:
                report.dropped.append((key, "the config has no auxiliary_head (it only adds a training loss)"))
            else:
                unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        fitted = _fit_key(key, value, target, model, bias_resize, report)
        if fitted is None:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(target[key].shape)}")
            continue
        out[key] = fitted
    missing: list[str] = []
    for key in target:
        if key in out:
            continue
        if key.endswith(".num_batches_tracked"):
            report.missing.append((key, "BatchNorm step counter, unused in inference"))
        elif key.startswith("auxiliary_head.") and not ckpt_aux:
            report.missing.append((key, "no auxiliary head in the checkpoint: initialised, used only in training"))
        else:
            missing.append(key)
    if unexpected or missing or mismatched:
        raise _misfit(model, unexpected, missing, mismatched)
    return out


def load_segmentor_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping, source: str = "",
                              bias_resize: str = "bicubic", unsafe_load: bool = False) -> SegmentorReport:
    """Load a whole UPerNet checkpoint in any supported layout into a densekit ``EncoderDecoder``, strictly.

    Args:
        model: the target segmentor.
        checkpoint: a path (file or HF folder), or a checkpoint already in memory.
        source: where it came from, for messages (defaults to the path).
        bias_resize: ``'bicubic'`` or ``'geometric'`` for Swin bias tables of another window.
        unsafe_load: unpickle a ``.pth`` fully (``weights_only=False``); only for files you trust.

    Returns:
        The ``SegmentorReport`` (with ``dataset_meta`` from the checkpoint, if any).

    Raises:
        FileNotFoundError, CheckpointError: unreadable file, unknown layout, or a checkpoint that does
            not fit (see ``fit_segmentor_state_dict``); messages name the file and keys.
    """
    state_dict, meta, source = read_whole_checkpoint(checkpoint, source, unsafe_load)
    from .swin_unet import detect_swin_unet_layout, load_swin_unet_checkpoint, strip_prefixes

    if detect_swin_unet_layout(strip_prefixes(state_dict)) == "official":
        # Official Swin-Unet keys (layers_up, concat_back_dim, ...) have their own key tables.
        swin_unet_report = load_swin_unet_checkpoint(model, {"state_dict": state_dict}, bias_resize, verbose=False)
        swin_unet_report.dataset_meta = meta
        return swin_unet_report
    return convert_and_load(model, state_dict, convert_segmentor_state_dict, source, meta, bias_resize)


def read_whole_checkpoint(checkpoint: str | os.PathLike | Mapping, source: str = "", unsafe_load: bool = False
                          ) -> tuple[StateDict, dict, str]:
    """``(state dict, dataset_meta, source)`` of a whole-model checkpoint given as a path or already in memory."""
    if isinstance(checkpoint, Mapping):
        return _unwrap(checkpoint), _dataset_meta(checkpoint.get("meta")), source
    state_dict, meta = read_segmentor_checkpoint(checkpoint, unsafe_load)
    return state_dict, meta, source or str(checkpoint)


def convert_and_load(model: nn.Module, state_dict: StateDict, convert, source: str, meta: dict,
                     bias_resize: str = "bicubic") -> SegmentorReport:
    """``convert(state_dict, model) -> (converted, report)``, checked strictly against ``model``
    (``fit_segmentor_state_dict``) and loaded; errors are prefixed with ``source``."""
    try:
        converted, report = convert(state_dict, model)
        weights = fit_segmentor_state_dict(converted, model, report, bias_resize)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    model.load_state_dict(weights, strict=False)  # strictness was checked above, with explanations
    report.source, report.loaded, report.dataset_meta = source, len(weights), meta
    return report


def load_model_checkpoint(model: nn.Module, checkpoint: str | os.PathLike | Mapping, source: str = "",
                          bias_resize: str = "bicubic", unsafe_load: bool = False) -> SegmentorReport:
    """A whole-model checkpoint into any densekit model: an ``RPN`` through ``convert.detector``, a segmentor
    (UPerNet, Swin-Unet) through ``load_segmentor_checkpoint``. Arguments and errors as theirs."""
    from ..models.rpn import RPN

    if isinstance(model, RPN):
        from .detector import load_detector_checkpoint

        return load_detector_checkpoint(model, checkpoint, source, bias_resize, unsafe_load)
    return load_segmentor_checkpoint(model, checkpoint, source, bias_resize, unsafe_load)


def convert_segmentor_file(src: str | os.PathLike, dst: str | os.PathLike, config, cfg_options: dict | None = None,
                           bias_resize: str = "bicubic", unsafe_load: bool = False) -> SegmentorReport:
    """Convert a whole-model checkpoint (UPerNet, Swin-Unet or RPN) into a densekit checkpoint for ``config``.

    The model is built as ``densekit.apis.init_model`` builds it (backbone ``pretrained=None``) and
    loaded with ``load_model_checkpoint``. ``dst`` gets ``{'meta': {...}, 'state_dict': ...}``
    (``torch.save``) or, ending in ``.safetensors``, the state dict with the meta as JSON under
    ``densekit_meta``; written atomically. ``meta['dataset_meta']`` keeps the source's class names.

    Args:
        src: ``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors`` file or HF ``save_pretrained`` folder.
        dst: the densekit checkpoint to write.
        config: a config path or ``mmengine.Config`` whose ``model`` is the target segmentor.
        cfg_options: overrides merged into the config (``--cfg-options``).
        bias_resize: for Swin bias tables of another window.
    """
    import densekit
    from densekit.apis import build_model, load_config

    state_dict, meta = read_segmentor_checkpoint(src, unsafe_load)  # a bad file fails before a model is built
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, pretrained=False)
    report = load_model_checkpoint(model, {"state_dict": state_dict}, str(src), bias_resize)
    report.dataset_meta = meta
    out_meta = {"densekit_version": densekit.__version__, "source": str(src), "layout": report.layout,
                "config": str(cfg.filename or "")}
    if getattr(report, "backbone_layout", ""):  # Swin-Unet reports have one layout for the whole model
        out_meta["backbone_layout"] = report.backbone_layout
    if meta:
        out_meta["dataset_meta"] = meta
    weights = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    dst = Path(dst)
    if dst.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"densekit_meta": json.dumps(out_meta)}
        save_atomically(dst, lambda tmp: save_file(weights, tmp, metadata=metadata))
    else:
        save_atomically(dst, lambda tmp: torch.save({"meta": out_meta, "state_dict": weights}, tmp))
    return report


__all__ = [
    "SEGMENTOR_LAYOUTS", "SegmentorReport", "convert_segmentor_file", "convert_segmentor_state_dict",
    "detect_segmentor_layout", "fit_segmentor_state_dict", "load_model_checkpoint", "load_segmentor_checkpoint",
    "read_segmentor_checkpoint",
]
