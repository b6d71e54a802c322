"""Checkpoint conversion: pure functions from state dicts to state dicts (DESIGN.md §4, §6.8).

Nothing here imports a densekit model, config or engine; whoever loads a file into a model
(``densekit.backbones.pretrained``, ``densekit.inference.checkpoint``) calls these, never the reverse::

    io.py          read_checkpoint (safe unpickling, safetensors, HF folders), unwrap, strip_prefixes, dataset_meta
    detect.py      which layout a state dict is in, for every source
    rules.py       Rule, apply_rules and the shared rows (buffers, heads); one table per source:
                   official_swin.py, timm.py, mmseg.py, hf.py, torchvision.py, mmdet.py, swin_unet.py,
                   convnext.py (mmpretrain ConvNeXt, mmseg's ConvNeXt UPerNets), twins.py (mmseg's Twins-SVT)
    swin.py        a Swin backbone in any layout -> densekit keys (convert_swin)
    swin_v2.py     a Swin V2 backbone (official, timm, HF, mmpretrain, SimMIM, densekit) -> densekit keys
    simmim.py      SimMIM pretraining files: the encoder under ``encoder.``; mask token and decoder dropped
    v2_windows.py  the windows a Swin V2 file was trained at, per stage, from its name, meta or config
    whole.py       a whole UPerNet / RPN / Swin-Unet -> densekit keys (convert_model)
    resize.py      bias tables, absolute position embeddings, patch-embedding input channels
    fit.py         ONE fit of converted tensors to a model's state dict, under an explicit FitPolicy
    report.py      ONE LoadReport, and CheckpointError
"""
from __future__ import annotations

from .detect import LAYOUTS, detect_layout
from .fit import FitPolicy, fit
from .io import checkpoint_safe_globals, is_refusal, read_checkpoint, refused_message, unwrap
from .mmseg import densekit_to_mmseg
from .official_swin import densekit_to_official
from .report import CheckpointError, LoadReport
from .resize import BIAS_RESIZE
from .swin import convert_swin
from .swin_v2 import convert_swin_v2, detect_v2_layout

__all__ = [
    "BIAS_RESIZE", "LAYOUTS", "CheckpointError", "FitPolicy", "LoadReport", "checkpoint_safe_globals", "convert_swin",
    "convert_swin_v2", "densekit_to_mmseg", "densekit_to_official", "detect_layout", "detect_v2_layout", "fit",
    "is_refusal", "read_checkpoint", "refused_message", "unwrap",
]
