"""Checkpoint files -> densekit checkpoint files (``densekit convert`` / ``tools/convert.py``).

``convert_file`` converts a Swin backbone (``--model``), ``convert_segmentor_file`` a whole UPerNet, RPN or
Swin-Unet (``--config``). Both build the target model, load the source into it (``backbones.pretrained``,
``inference.checkpoint``) and save its state dict, atomically: ``{'meta', 'state_dict'}`` with ``torch.save``,
or for ``.safetensors`` the tensors with the meta as string metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch
from mmengine.config import Config

from .. import __version__
from ..backbones import create_backbone
from ..backbones.pretrained import load_pretrained_v2, load_state_dict_from, load_vit_pretrained
from ..backbones.vit import VIT_PRESETS, ViTBackbone, is_timm_vit
from ..convert.io import read_checkpoint, read_model_checkpoint
from ..convert.report import LoadReport
from ..engine.config import load_config
from ..fileio import save_atomically
from ..models.builder import build_model
from .checkpoint import load_model_checkpoint


def _save(dst: Path, state_dict: dict[str, torch.Tensor], meta: dict, safetensors_meta: dict[str, str]) -> None:
    state_dict = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    if dst.suffix.lower() == ".safetensors":
        save_atomically(dst, lambda tmp: safetensors.torch.save_file(state_dict, tmp, metadata=safetensors_meta))
    else:
        save_atomically(dst, lambda tmp: torch.save({"meta": meta, "state_dict": state_dict}, tmp))


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, model_name: str, window_size: int | None = None,
                 in_chans: int | None = None, bias_resize: str = "bicubic", unsafe_load: bool = False) -> LoadReport:
    """Convert ``src`` (any Swin layout) into a densekit checkpoint for ``create_backbone(model_name, ...)``.

    A Swin V2 model (``swinv2_*``) takes official, timm, HF, mmpretrain, SimMIM or densekit V2 files; its weights do
    not depend on the window. The pretrained windows the load took (from the source's name or meta) are written to
    the meta (``pretrained_window_size``), so the new file runs at ``window_size`` as the source was trained.
    A ViT (``vit_s/b/l`` or a timm ViT name) takes official MAE, DINO, DINOv2, timm, mmseg or densekit files.

    ``dst`` ending in ``.safetensors`` gets the state dict with string metadata; anything else an
    mmengine-style ``{'meta': {...}, 'state_dict': ...}`` written with ``torch.save``.

    Returns:
        The ``LoadReport`` of loading ``src`` into the new model (``unsafe_load``: see ``read_checkpoint``).
    """
    checkpoint = read_checkpoint(src, unsafe_load)  # a bad file fails before a model is built
    options = {k: v for k, v in (("window_size", window_size), ("in_chans", in_chans)) if v is not None}
    if window_size is not None and is_timm_vit(VIT_PRESETS.get(model_name, model_name)):
        raise ValueError(f"--window-size: {model_name} is a plain ViT (global attention, no window)")
    model = create_backbone(model_name, **options)
    if hasattr(model, "pretrained_window_size"):  # Swin V2: keys only, nothing depends on the window
        report = load_pretrained_v2(model, checkpoint, verbose=False, source=str(src))
    elif isinstance(model, ViTBackbone):  # MAE, DINO, DINOv2, timm, mmseg: position embedding resized to img_size
        report = load_vit_pretrained(model, checkpoint, verbose=False, source=str(src))
    else:
        report = load_state_dict_from(model, checkpoint, str(src), bias_resize, verbose=False)
    meta = {
        "densekit_version": __version__, "source": str(src), "layout": report.layout, "model": model_name,
        "window_size": getattr(model, "window_size", window_size), "in_chans": getattr(model, "in_chans", in_chans),
    }
    if hasattr(model, "pretrained_window_size"):
        meta["pretrained_window_size"] = list(model.pretrained_window_size)
    _save(Path(dst), model.state_dict(), meta, {key: str(value) for key, value in meta.items()})
    return report


def convert_segmentor_file(src: str | os.PathLike, dst: str | os.PathLike, config: str | Config,
                           cfg_options: dict | None = None, bias_resize: str = "bicubic",
                           unsafe_load: bool = False) -> LoadReport:
    """Convert a whole-model checkpoint (UPerNet, Swin-Unet or RPN) into a densekit checkpoint for ``config``.

    The model is built as ``init_model`` builds it (backbone ``pretrained=None``) and loaded with
    ``load_model_checkpoint``. ``dst`` gets ``{'meta': {...}, 'state_dict': ...}`` (``torch.save``) or, ending
    in ``.safetensors``, the state dict with the meta as JSON under ``densekit_meta``; written atomically.
    ``meta['dataset_meta']`` keeps the source's class names.

    Args:
        src: ``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors`` file or HF ``save_pretrained`` folder.
        dst: the densekit checkpoint to write.
        config: a config path or ``mmengine.Config`` whose ``model`` is the target.
        cfg_options: overrides merged into the config (``--cfg-options``).
        bias_resize: for Swin bias tables of another window.
        unsafe_load: unpickle a ``.pth`` fully (``weights_only=False``); only for files you trust.
    """
    state_dict, meta = read_model_checkpoint(src, unsafe_load)  # a bad file fails before a model is built
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, pretrained=False)
    report = load_model_checkpoint(model, {"state_dict": state_dict}, str(src), bias_resize)
    report.dataset_meta = meta
    out_meta = {"densekit_version": __version__, "source": str(src), "layout": report.layout,
                "config": str(cfg.filename or "")}
    if report.backbone_layout:  # official Swin-Unet reports have one layout for the whole model
        out_meta["backbone_layout"] = report.backbone_layout
    if meta:
        out_meta["dataset_meta"] = meta
    _save(Path(dst), model.state_dict(), out_meta, {"densekit_meta": json.dumps(out_meta)})
    return report


__all__ = ["convert_file", "convert_segmentor_file"]
