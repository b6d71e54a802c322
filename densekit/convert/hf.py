"""HuggingFace ``UperNetForSemanticSegmentation`` (Swin or ConvNeXt backbone) -> densekit UPerNet keys.

A pure function over state dicts (DESIGN.md §6.8): a table of key rules per part, plus one fusion
(HF's separate Swin ``q/k/v`` linears become densekit's ``attn.qkv``). Both the transformers 5 names
(``attention.q_proj``, ``mlp.fc1``, ``backbone.swin.*``) and the 4.x names that checkpoints on the Hub
still carry (``attention.self.query``, ``intermediate.dense``, ``backbone.encoder.*``) are accepted.

Target layout: ``backbone.*`` (densekit ``SwinTransformer``, or ``TimmBackbone`` = ``backbone.model.*``
in timm's ConvNeXt names), ``decode_head.*`` (``UPerHead``), ``auxiliary_head.*`` (``FCNHead``).

Both backbones normalise each returned map (``backbone.hidden_states_norms.stageN``, like mmseg's
``norm0..3``): these become ``backbone.out_norms.{N-1}``, which densekit's Swin has by default and a
``TimmBackbone`` ConvNeXt has with ``out_norm=True``. Not mapped, and reported: the classifier
``layernorm`` after the last stage (unused by a backbone).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]

# (pattern, replacement) applied in order with re.sub; keys are first normalised to start with "backbone.".
SWIN_RULES: list[Rule] = [
    (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.embeddings\.norm\.", "backbone.patch_embed.norm."),
    (r"^backbone\.encoder\.layers\.(\d+)\.", r"backbone.stages.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.(self|relative_position_bias)\.relative_position_bias_table$",
     ".attn.relative_position_bias_table"),
    (r"\.attention\.(output\.dense|o_proj)\.", ".attn.proj."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.blocks\.(\d+)\.output\.dense\.", r".blocks.\1.mlp.fc2."),
    (r"^backbone\.hidden_states_norms\.stage(\d)\.", lambda m: f"backbone.out_norms.{int(m.group(1)) - 1}."),
]
CONVNEXT_RULES: list[Rule] = [
    (r"^backbone\.embeddings\.patch_embeddings\.", "backbone.model.stem.0."),
    (r"^backbone\.embeddings\.layernorm\.", "backbone.model.stem.1."),
    (r"^backbone\.encoder\.stages\.(\d+)\.downsampling_layer\.", r"backbone.model.stages.\1.downsample."),
    (r"^backbone\.encoder\.stages\.(\d+)\.layers\.", r"backbone.model.stages.\1.blocks."),
    (r"\.dwconv\.", ".conv_dw."),
    (r"\.layernorm\.", ".norm."),
    (r"\.pwconv1\.", ".mlp.fc1."),
    (r"\.pwconv2\.", ".mlp.fc2."),
    (r"\.layer_scale_parameter$", ".gamma"),
    (r"^backbone\.hidden_states_norms\.stage(\d)\.", lambda m: f"backbone.out_norms.{int(m.group(1)) - 1}."),
]
HEAD_RULES: list[Rule] = [
    (r"^(decode_head|auxiliary_head)\.classifier\.", r"\1.conv_seg."),
    (r"\.batch_norm\.", ".bn."),
]
# HF keys with no densekit counterpart: the classifier norm after the last stage, Swin's absolute
# position embeddings (UperNet configs never use them).
SWIN_UNMAPPED = re.compile(r"^backbone\.layernorm\.|position_embeddings$")
CONVNEXT_UNMAPPED = re.compile(r"^backbone\.layernorm\.")
# Recomputable buffers older transformers versions stored; never kept (DESIGN.md §3).
RECOMPUTABLE = re.compile(r"relative_position_index$|attn_mask$")


def detect_backbone(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'swin'`` or ``'convnext'`` from the HF backbone keys."""
    keys = list(state_dict)
    if any(".blocks." in k and k.startswith("backbone.") for k in keys):
        return "swin"
    if any(k.startswith("backbone.encoder.stages.") for k in keys):
        return "convnext"
    raise ValueError("not a HuggingFace UperNet state dict with a Swin or ConvNeXt backbone "
                     f"(first keys: {keys[:3]})")


def _rename(key: str, rules: list[Rule]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _fuse_qkv(state_dict: dict[str, torch.Tensor], unmapped: list[str]) -> None:
    """Concatenate ``attention.{q,k,v}_proj.{weight,bias}`` into ``attn.qkv`` (rows q, k, v), in place."""
    for key in [k for k in state_dict if ".attention.q_proj." in k]:
        parts = [key.replace(".q_proj.", f".{n}_proj.") for n in "qkv"]
        if not all(p in state_dict for p in parts):
            unmapped.extend(p for p in parts if p in state_dict)
            for p in parts:
                state_dict.pop(p, None)
            continue
        state_dict[key.replace(".attention.q_proj.", ".attn.qkv.")] = torch.cat([state_dict.pop(p) for p in parts])


def convert_hf_upernet(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a HuggingFace UperNet state dict into densekit's segmentor layout.

    Args:
        state_dict: ``UperNetForSemanticSegmentation.state_dict()`` (transformers 4.x or 5.x names), Swin
            or ConvNeXt backbone.

    Returns:
        ``(converted, unmapped)``: tensors under ``backbone.*``, ``decode_head.*`` and ``auxiliary_head.*``
        (the input tensors themselves, except the fused ``attn.qkv``), and the sorted HF keys that have no
        densekit counterpart and were left out (an incomplete q/k/v triple is listed under its ``attention.*_proj``
        names). Recomputable buffers (``relative_position_index``) are
        dropped silently.
    """
    kind = detect_backbone(state_dict)
    rules, skip = (SWIN_RULES, SWIN_UNMAPPED) if kind == "swin" else (CONVNEXT_RULES, CONVNEXT_UNMAPPED)
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if RECOMPUTABLE.search(key):
            continue
        if key.startswith(("decode_head.", "auxiliary_head.")):
            out[_rename(key, HEAD_RULES)] = value
            continue
        if not key.startswith("backbone."):
            unmapped.append(key)
            continue
        normalised = key.replace("backbone.swin.", "backbone.", 1)  # transformers 5 nests SwinModel
        if skip.search(normalised):
            unmapped.append(key)
            continue
        out[_rename(normalised, rules)] = value
    if kind == "swin":
        _fuse_qkv(out, unmapped)
    return out, sorted(unmapped)
