"""A Swin V2 backbone state dict (official, timm, HF ``Swinv2Model`` / ``Swinv2Backbone``, mmpretrain, SimMIM,
densekit) -> densekit keys.

Official and timm V2 files keep V1's key structure (``layers.{i}``, merging at the end of stage i officially,
at the start of stage i+1 in timm), so their tables are V1's (``official_swin.py``, ``timm.py``); the official
buffers ``relative_coords_table``, ``relative_position_index`` and ``attn_mask`` are dropped by them and reported.
HF names every part differently and splits ``qkv`` into ``query``/``key``/``value`` (no key bias): a table of
renames, then the three weights are fused into ``attn.qkv.weight`` and the biases become ``q_bias``/``v_bias``.
mmpretrain's ``SwinTransformerV2`` keeps mmseg's names (``patch_embed.projection``, ``attn.w_msa``, ``ffn.layers``,
``norm{i}``) and merges patches with ``nn.Unfold`` at the START of stage i+1, reducing before its norm (post-norm):
the reduction's input columns are permuted as mmseg's (``mmseg.py``), the norm over 2C is not. SimMIM files
(``simmim.py``) are an official-layout encoder under ``encoder.``.
"""
from __future__ import annotations

import re

import torch

from .mmseg import unfold_to_official_reduction
from .official_swin import OFFICIAL_TO_DENSEKIT
from .report import CheckpointError, LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules, num_stages
from .simmim import MASK_TOKEN_WHY, is_simmim, simmim_encoder, trace_back
from .timm import TIMM_TO_DENSEKIT

V2_LAYOUTS = ("official", "timm", "hf", "mmpretrain", "simmim", "densekit")

_V2_KEY = re.compile(r"cpb_mlp|continuous_position_bias_mlp|logit_scale$")
_V1_KEY = re.compile(r"relative_position_bias_table$")
_HF_KEY = re.compile(r"^(swinv2\.)?(embeddings|encoder)\.")
_DENSEKIT_V2 = re.compile(r"^stages\.\d+\.blocks\.\d+\.attn\.")
_TIMM_DOWNSAMPLE = re.compile(r"^layers\.[1-9]\d*\.downsample\.")
_MMPRETRAIN_KEY = re.compile(r"\.attn\.w_msa\.|^patch_embed\.projection\.|\.ffn\.layers\.")

_HF = r"^(?:swinv2\.)?"
_HF_BLOCK = _HF + r"encoder\.layers\.(\d+)\.blocks\.(\d+)\."
HF_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(_HF + r"(pooler|classifier)\.", None, why="classifier head"),
    Rule(_HF + r"embeddings\.mask_token$", None, why=MASK_TOKEN_WHY),
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



def _merged_at_the_end(match: re.Match, _: object) -> str:
    # mmpretrain merges at the start of stage i (i >= 1), densekit (and the official code) at the end of i - 1.
    stage = int(match.group(1))
    if stage == 0:
        raise CheckpointError("mmpretrain Swin V2 file with patch merging in stage 0 (stages.0.downsample): "
                              "mmpretrain merges at the start of stages 1-3 only")
    return f"stages.{stage - 1}.downsample."


_MM_BLOCK = r"^stages\.(\d+)\.blocks\.(\d+)\."
MMPRETRAIN_TO_DENSEKIT: tuple[Rule, ...] = DROP_RULES + (
    Rule(r"^patch_embed\.projection\.", "patch_embed.proj.", why="conv name"),
    Rule(_MM_BLOCK + r"attn\.w_msa\.", r"stages.\1.blocks.\2.attn.", why="mmpretrain wraps window attention in w_msa"),
    Rule(_MM_BLOCK + r"ffn\.layers\.0\.0\.", r"stages.\1.blocks.\2.mlp.fc1.", why="mmcv FFN: layers.0 = (fc1, act)"),
    Rule(_MM_BLOCK + r"ffn\.layers\.1\.", r"stages.\1.blocks.\2.mlp.fc2.", why="mmcv FFN: layers.1 = fc2"),
    Rule(r"^stages\.(\d+)\.downsample\.(?=reduction\.weight$)", _merged_at_the_end, value=unfold_to_official_reduction,
         why="nn.Unfold channel order, merging moved to the end of the previous stage"),
    Rule(r"^stages\.(\d+)\.downsample\.", _merged_at_the_end, why="merging moved to the end of the previous stage"),
    Rule(r"^norm(\d+)\.", r"out_norms.\1.", why="per-stage output norms"),
)


def detect_v2_layout(state_dict: Tensors) -> str:
    """``'official'``, ``'timm'``, ``'hf'``, ``'mmpretrain'``, ``'simmim'`` or ``'densekit'`` for an unwrapped Swin V2
    state dict (``'simmim'``: a SimMIM pretraining file whose ``encoder.`` is in one of the others).

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
    if is_simmim(keys):
        return "simmim"
    if any(_HF_KEY.match(key) for key in keys):
        return "hf"
    if any(_MMPRETRAIN_KEY.search(key) for key in keys):  # before densekit: both say stages.i.blocks.j.attn
        return "mmpretrain"
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
    elif layout == "mmpretrain":
        out, report = apply_rules(state_dict, MMPRETRAIN_TO_DENSEKIT, progress=progress)
    elif layout == "simmim":
        return _simmim_to_densekit(state_dict, progress)
    elif layout == "densekit":
        out, report = apply_rules(state_dict, DROP_RULES, progress=progress)
    else:
        raise ValueError(f"unknown Swin V2 layout {layout!r}; expected one of {V2_LAYOUTS}")
    report.layout = layout
    return out, report


def _simmim_to_densekit(state_dict: Tensors, progress: bool) -> tuple[StateDict, LoadReport]:
    """A SimMIM V2 pretraining file: its encoder converted, mask token and decoder dropped (``simmim.py``)."""
    encoder, pre = simmim_encoder(state_dict)
    inner = detect_v2_layout(encoder)
    if inner == "simmim":
        raise CheckpointError("a SimMIM file nested in another SimMIM file: cannot find the Swin V2 encoder")
    out, report = convert_swin_v2(encoder, inner, progress)
    report = trace_back(pre, report)
    report.layout = f"simmim/{inner}"
    return out, report
