"""A plain ViT backbone state dict (official MAE, DINO, DINOv2, timm, mmseg ``VisionTransformer`` / ``MAE``,
densekit) -> timm's ``VisionTransformer`` keys, which densekit's ``ViTBackbone`` holds under ``model.``.

Official MAE, DINO and DINOv2 are built on timm's ViT, so their block keys are timm's already; what differs::

    MAE (pretraining, {'model': ...})  decoder_*, mask_token                    dropped: used only in pretraining
    DINO                               head.* (DINOHead)                       dropped: the projection head
    DINOv2                             mask_token                              dropped: used only in pretraining
                                       register_tokens                         -> reg_token (timm's no_embed_class:
                                                                               pos_embed's class slot added into
                                                                               cls_token, as timm's _convert_dinov2)
                                       blocks.{chunk}.{i}. (ViT-g BlockChunk)  -> blocks.{i}.
                                       mlp.w12 / mlp.w3 (SwiGLU)               -> mlp.fc1 / mlp.fc2
    mmseg VisionTransformer            patch_embed.projection, layers.{i}.ln1/ln2, attn.attn.in_proj_{weight,bias},
                                       attn.attn.out_proj, ffn.layers.0.0 / ffn.layers.1, ln1 (final norm)
    mmseg MAE (BEiT-style)             layers.{i}.attn.qkv (no q/k/v bias), gamma_1/gamma_2 (LayerScale),
                                       attn.relative_position_bias_table (zero-initialised by mmseg's MAE)

timm's ViT has no relative position bias: an mmseg MAE table that is all zeros (as initialised) is dropped, any
other is refused by name. mmseg's MAE computes q/k/v without bias: zeros are written and reported.
"""
from __future__ import annotations

import re

import torch

from .report import CheckpointError, LoadReport
from .rules import DROP_RULES, Rule, StateDict, Tensors, apply_rules

VIT_LAYOUTS = ("mae", "dino", "dinov2", "timm", "mmseg", "mmseg_mae", "densekit")

_PRETRAIN_ONLY = (
    Rule(r"^decoder_|^decoder\.", None, why="MAE pretraining decoder"),
    Rule(r"^mask_token$", None, why="mask token, used only in pretraining"),
    Rule(r"^fc_norm\.", None, why="classifier pooling norm"),
)
TIMM_TO_VIT: tuple[Rule, ...] = DROP_RULES + _PRETRAIN_ONLY
DINOV2_TO_VIT: tuple[Rule, ...] = TIMM_TO_VIT + (
    Rule(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", why="ViT-g BlockChunk: global block index"),
    Rule(r"(\.mlp\.)w12\.", r"\1fc1.", why="SwiGLU packed input projection"),
    Rule(r"(\.mlp\.)w3\.", r"\1fc2.", why="SwiGLU output projection"),
)

_LAYER = r"^layers\.(\d+)\."
_MMSEG_COMMON = (
    Rule(r"^patch_embed\.projection\.", "patch_embed.proj.", why="mmcv PatchEmbed conv name"),
    Rule(_LAYER + r"ln1\.", r"blocks.\1.norm1.", why="mmseg layer norms are ln1/ln2"),
    Rule(_LAYER + r"ln2\.", r"blocks.\1.norm2.", why="mmseg layer norms are ln1/ln2"),
    Rule(_LAYER + r"ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1.", why="mmcv FFN: layers.0 = (fc1, act, drop)"),
    Rule(_LAYER + r"ffn\.layers\.1\.", r"blocks.\1.mlp.fc2.", why="mmcv FFN: layers.1 = fc2"),
    Rule(r"^ln1\.", "norm.", why="mmseg's final norm"),
)
MMSEG_TO_VIT: tuple[Rule, ...] = DROP_RULES + _MMSEG_COMMON + (
    Rule(_LAYER + r"attn\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2",
         why="nn.MultiheadAttention in_proj = fused q, k, v"),
    Rule(_LAYER + r"attn\.attn\.out_proj\.", r"blocks.\1.attn.proj.", why="nn.MultiheadAttention out_proj"),
)
MMSEG_MAE_TO_VIT: tuple[Rule, ...] = DROP_RULES + _MMSEG_COMMON + (
    Rule(_LAYER + r"attn\.relative_position_bias_table$", None,
         why="zero relative position bias (mmseg MAE's initialisation): no effect"),
    Rule(_LAYER + r"attn\.(qkv|proj)\.", r"blocks.\1.attn.\2.", why="BEiT-style attention"),
    Rule(_LAYER + r"gamma_1$", r"blocks.\1.ls1.gamma", why="LayerScale"),
    Rule(_LAYER + r"gamma_2$", r"blocks.\1.ls2.gamma", why="LayerScale"),
)
DENSEKIT_TO_VIT: tuple[Rule, ...] = (Rule(r"^model\.", "", why="densekit ViTBackbone holds timm's ViT as model"),)

_TABLES = {"mae": TIMM_TO_VIT, "dino": TIMM_TO_VIT, "timm": TIMM_TO_VIT, "dinov2": DINOV2_TO_VIT,
           "mmseg": MMSEG_TO_VIT, "mmseg_mae": MMSEG_MAE_TO_VIT, "densekit": DENSEKIT_TO_VIT}
_DINOV2 = re.compile(r"^register_tokens$|\.mlp\.w12\.|^blocks\.\d+\.\d+\.")


def detect_vit_layout(state_dict: Tensors) -> str:
    """Which layout an unwrapped ViT state dict is in (one of ``VIT_LAYOUTS``).

    DINO's backbone file (without its ``head.*``) has exactly timm's keys and is reported as ``'timm'``; MAE's
    fine-tuned files likewise.

    Raises:
        CheckpointError: not a plain ViT in a known layout (a Swin, say).
    """
    keys = list(state_dict)
    if any(key.startswith("model.blocks.") or key == "model.pos_embed" for key in keys):
        return "densekit"
    if any(re.match(_LAYER + r"attn\.attn\.in_proj_weight$", key) for key in keys):
        return "mmseg"
    if any(re.match(_LAYER + r"(gamma_1|attn\.qkv\.weight)$", key) for key in keys):
        return "mmseg_mae"
    if not any(key.startswith("blocks.") for key in keys) or "pos_embed" not in state_dict and "cls_token" \
            not in state_dict:
        raise CheckpointError(f"not a plain ViT state dict in a known layout ({', '.join(VIT_LAYOUTS)}); "
                              f"first keys: {keys[:5]}")
    if any(key.startswith("decoder_") for key in keys):
        return "mae"
    mask = state_dict.get("mask_token")
    if any(_DINOV2.search(key) for key in keys) or (mask is not None and mask.dim() == 2):
        return "dinov2"  # DINOv2's mask_token is (1, C); MAE's is (1, 1, C)
    if mask is not None:
        return "mae"
    if any(key.startswith(("head.mlp.", "head.last_layer.")) for key in keys):
        return "dino"
    return "timm"


def _registers_to_timm(state_dict: StateDict, report: LoadReport) -> None:
    """DINOv2 ``register_tokens`` -> timm's ``reg_token``, in place.

    DINOv2 adds ``pos_embed[:, 0]`` to the class token and inserts the registers after it unembedded; timm's
    ``_reg`` models (``no_embed_class``) keep no class slot in ``pos_embed``, so the slot is added into
    ``cls_token`` once here (the same sum, done ahead of time).
    """
    if "register_tokens" not in state_dict:
        return
    state_dict["reg_token"] = state_dict.pop("register_tokens")
    state_dict["cls_token"] = state_dict["cls_token"] + state_dict["pos_embed"][:, :1]
    state_dict["pos_embed"] = state_dict["pos_embed"][:, 1:]
    report.renamed.append(("register_tokens", "reg_token"))
    report.permuted += ["cls_token (+ pos_embed class slot)", "pos_embed (class slot removed)"]


def _mmseg_mae_fixups(state_dict: Tensors, out: StateDict, report: LoadReport) -> None:
    """Refuse learned relative position bias; write the zero q/k/v bias mmseg's MAE computes with (in place)."""
    learned = [key for key, value in state_dict.items()
               if key.endswith("relative_position_bias_table") and bool(value.abs().max() > 0)]
    if learned:
        raise CheckpointError(f"{len(learned)} learned relative position bias tables (e.g. {learned[0]}): a "
                              "BEiT-style ViT that timm's plain ViT (densekit's ViTBackbone) cannot represent")
    for key in [k for k in out if k.endswith(".attn.qkv.weight")]:
        bias = key[: -len("weight")] + "bias"
        if bias not in out:
            out[bias] = torch.zeros(out[key].shape[0], dtype=out[key].dtype)
            report.missing.append((bias, "mmseg's MAE has no q/k/v bias: zeros, as it computes"))


def convert_vit(state_dict: Tensors, layout: str, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Convert an unwrapped ViT state dict from ``layout`` (``detect_vit_layout``) to timm ViT keys.

    Returns:
        ``(state_dict, report)``: keys of timm's ``VisionTransformer`` (prefix them with ``model.`` for a
        ``ViTBackbone``); tensors shared except DINOv2's class token / position embedding and filled biases.
    """
    if layout not in _TABLES:
        raise ValueError(f"unknown ViT layout {layout!r}; expected one of {VIT_LAYOUTS}")
    out, report = apply_rules(state_dict, _TABLES[layout], progress=progress, desc="converting ViT")
    if layout == "dinov2":
        _registers_to_timm(out, report)
    elif layout == "mmseg_mae":
        _mmseg_mae_fixups(state_dict, out, report)
    report.layout = layout
    return out, report
