"""timm ViT state dicts renamed to mmsegmentation's layouts by literal key rules (its vit2mmseg / beit2mmseg
renames), for the conversion tests."""
from __future__ import annotations

import re

import torch


def _common(key: str) -> str:
    key = key.replace("patch_embed.proj.", "patch_embed.projection.")
    key = re.sub(r"^norm\.", "ln1.", key)
    key = re.sub(r"^blocks\.", "layers.", key)
    key = key.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
    return key.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")


def mmseg_vit(sd: dict) -> dict:
    """timm ViT keys -> mmseg ``VisionTransformer``: nn.MultiheadAttention's in_proj / out_proj."""
    out = {}
    for key, value in sd.items():
        key = _common(key)
        key = key.replace(".attn.qkv.weight", ".attn.attn.in_proj_weight")
        key = key.replace(".attn.qkv.bias", ".attn.attn.in_proj_bias")
        out[key.replace(".attn.proj.", ".attn.attn.out_proj.")] = value
    return out


def mmseg_mae(sd: dict, table: torch.Tensor) -> dict:
    """timm ViT keys (no qkv bias, LayerScale) -> mmseg's BEiT-style ``MAE``: ln1/ln2, attn.qkv (no bias),
    gamma_1/gamma_2, a relative position bias table per layer (zero-initialised) and its index buffer."""
    out = {}
    for key, value in sd.items():
        key = _common(key).replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")
        out[key] = value
        if key.endswith(".attn.proj.weight"):
            layer = key[: -len("proj.weight")]
            out[layer + "relative_position_bias_table"] = table.clone()
            out[layer + "relative_position_index"] = torch.zeros(5, 5, dtype=torch.long)
    return out
