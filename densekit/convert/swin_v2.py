"""A Swin V2 backbone state dict (official, timm, HF ``Swinv2Model`` / ``Swinv2Backbone``, densekit) -> densekit keys.

Official and timm V2 files keep V1's key structure (``layers.{i}``, merging at the end of stage i officially,
at the start of stage i+1 in timm), so their tables are V1's (``official_swin.py``, ``timm.py``); the official
buffers ``relative_coords_table``, ``relative_position_index`` and ``attn_mask`` are dropped by them and reported.
HF names every part differently and splits ``qkv`` into ``query``/``key``/``value`` (no key bias): a table of
renames, then the three weights are fused into ``attn.qkv.weight`` and the biases become ``q_bias``/``v_bias``.
"""
from __future__ import annotations

import re

import torch

from .official_swin import OFFICIAL_TO_DENSEKIT
from .report import CheckpointError, LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules, num_stages
from .timm import TIMM_TO_DENSEKIT

V2_LAYOUTS = ("official", "timm", "hf", "densekit")

_V2_KEY = re.compile(r"cpb_mlp|continuous_position_bias_mlp|logit_scale$")
_V1_KEY = re.compile(r"relative_position_bias_table$")
_HF_KEY = re.compile(r"^(swinv2\.)?(embeddings|encoder)\.")
_DENSEKIT_V2 = re.compile(r"^stages\.\d+\.blocks\.\d+\.attn\.")
_TIMM_DOWNSAMPLE = re.compile(r"^layers\.[1-9]\d*\.downsample\.")

_HF = r"^(?:swinv2\.)?"
_HF_BLOCK = _HF + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
HF_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(_HF + r"(pooler|classifier)\.", None, why="classifier head"),
    Rule(_HF + r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj.", why="patch embedding"),
    Rule(_HF + r"embeddings\.norm\.", "patch_embed.norm.", why="patch embedding norm"),
    Rule(_HF_BLOCK + r"attention\.self\.continuous_position_bias_mlp\.", r"stages.\1.blocks.\2.attn.cpb_mlp.",
         why="position bias MLP"),
    Rule(_HF_BLOCK + r"attention\.self\.logit_scale$", r"stages.\1.blocks.\2.attn.logit_scale", why="logit scale"),
    Rule(_HF_BLOCK + r"attention\.self\.query\.bias$", r"stages.\1.blocks.\2.attn.q_bias", why="q bias"),
    Rule(_HF_BLOCK + r"attention\.self\.value\.bias$", r"stages.\1.blocks.\2.attn.v_bias", why="v bias"),
    Rule(_HF_BLOCK + r"attention\.self\.(query|key|value)\.weight$", r"stages.\1.blocks.\2.attn.\3.weight",
         why="fused into qkv"),
    Rule(_HF_BLOCK + r"attention\.output\.dense\.", r"stages.\1.blocks.\2.attn.proj.", why="output projection"),
    Rule(_HF_BLOCK + r"layernorm_before\.", r"stages.\1.blocks.\2.norm1.", why="post-attention norm"),
    Rule(_HF_BLOCK + r"layernorm_after\.", r"stages.\1.blocks.\2.norm2.", why="post-MLP norm"),
    Rule(_HF_BLOCK + r"intermediate\.dense\.", r"stages.\1.blocks.\2.mlp.fc1.", why="MLP"),
    Rule(_HF_BLOCK + r"output\.dense\.", r"stages.\1.blocks.\2.mlp.fc2.", why="MLP"),
    Rule(_HF + r"encoder\.layers\.(\d+)\.downsample\.", r"stages.\1.downsample.", why="patch merging"),
    Rule(_HF + r"hidden_states_norms\.stage(\d+)\.", lambda m, _: f"out_norms.{int(m.group(1)) - 1}.",
         why="output norm"),
    Rule(_HF + r"layernorm\.", "out_norms.{last}.", why="final norm is the last stage's output norm"),
)


def detect_v2_layout(state_dict: Tensors) -> str:
    """``'official'``, ``'timm'``, ``'hf'`` or ``'densekit'`` for an unwrapped Swin V2 state dict.

    Raises:
        CheckpointError: a Swin V1 checkpoint (``relative_position_bias_table``, no position bias MLP), or no
            known V2 layout.
    """
    keys = list(state_dict)
    if not any(_V2_KEY.search(key) for key in keys):
        if any(_V1_KEY.search(key) for key in keys):
            raise CheckpointError("a Swin V1 checkpoint (relative_position_bias_table keys, no cpb_mlp / logit_scale):"
                                  " this model is Swin V2; load it into a V1 model (swin_t/s/b/l) instead")
        raise CheckpointError(f"not a Swin V2 state dict (no cpb_mlp / logit_scale keys); first keys: {keys[:5]}")
    if any(_HF_KEY.match(key) for key in keys):
        return "hf"
    if any(_DENSEKIT_V2.match(key) for key in keys):
        return "densekit"
    if "layers.0.downsample.reduction.weight" in state_dict:
        return "official"
    if any(_TIMM_DOWNSAMPLE.match(key) for key in keys) or "head.fc.weight" in state_dict:
        return "timm"
    if any(key.startswith("layers.") for key in keys):
        return "official"  # one stage, or headless and unmerged: the two layouts agree
    raise CheckpointError(f"a Swin V2 state dict in no known layout ({', '.join(V2_LAYOUTS)}); first keys: {keys[:5]}")


def _fuse_qkv(state_dict: StateDict, report: LoadReport) -> None:
    """``attn.{query,key,value}.weight`` -> ``attn.qkv.weight`` (rows q, k, v), in place."""
    for key in [k for k in state_dict if k.endswith(".attn.query.weight")]:
        parts = [key.replace(".query.", f".{name}.") for name in ("query", "key", "value")]
        missing = [p for p in parts if p not in state_dict]
        if missing:
            raise CheckpointError(f"HF Swin V2 attention without {missing[0]}: cannot fuse q, k, v")
        fused = key.replace(".attn.query.", ".attn.qkv.")
        state_dict[fused] = torch.cat([state_dict.pop(p) for p in parts])
        report.renamed.append((key.replace(".attn.query.", ".attn.{query,key,value}."), fused))


def convert_swin_v2(state_dict: Tensors, layout: str, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Convert an unwrapped Swin V2 state dict from ``layout`` (``detect_v2_layout``) to densekit keys.

    Returns:
        ``(state_dict, report)``: tensors shared except the fused HF ``qkv``; buffers, heads and final norms
        the model lacks are handled as for V1 (dropped and reported).
    """
    if layout == "official":
        out, report = apply_rules(state_dict, OFFICIAL_TO_DENSEKIT, {"last": num_stages(state_dict, "layers") - 1},
                                  progress)
    elif layout == "timm":
        out, report = apply_rules(state_dict, TIMM_TO_DENSEKIT, {"last": num_stages(state_dict, "layers") - 1},
                                  progress)
    elif layout == "hf":
        stripped = {key.removeprefix("swinv2."): value for key, value in state_dict.items()}
        context = {"last": num_stages(stripped, "encoder.layers") - 1}
        out, report = apply_rules(state_dict, HF_TO_DENSEKIT, context, progress)
        _fuse_qkv(out, report)
    elif layout == "densekit":
        out, report = apply_rules(state_dict, DROP_RULES, progress=progress)
    else:
        raise ValueError(f"unknown Swin V2 layout {layout!r}; expected one of {V2_LAYOUTS}")
    report.layout = layout
    return out, report
