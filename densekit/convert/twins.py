"""mmsegmentation's Twins-SVT layout (``mmseg.models.backbones.twins.SVT``) -> densekit's ``TwinsSVT`` keys.

mmseg's keys (``backbone.`` stripped) and densekit's (timm's Twins under ``model.``, mmseg's stage norms kept)::

    patch_embeds.{i}.projection                 (patchify conv)          -> model.patch_embeds.{i}.proj
    patch_embeds.{i}.norm                                                -> model.patch_embeds.{i}.norm
    position_encodings.{i}.proj                 (depthwise 3x3 conv)     -> model.pos_block.{i}.proj.0
    layers.{i}.{j}.norm{1,2}                                             -> model.blocks.{i}.{j}.norm{1,2}
    layers.{i}.{j}.attn.{qkv,proj}              (even j: LSA)            -> model.blocks.{i}.{j}.attn.{qkv,proj}
    layers.{i}.{j}.attn.attn.in_proj_{weight,bias}  (odd j: GSA, (3C,..)) -> attn.q (rows :C), attn.kv (rows C:)
    layers.{i}.{j}.attn.attn.out_proj                                    -> model.blocks.{i}.{j}.attn.proj
    layers.{i}.{j}.attn.{sr,norm}               (spatial reduction)      -> model.blocks.{i}.{j}.attn.{sr,norm}
    layers.{i}.{j}.ffn.layers.0.0 / ffn.layers.1                         -> model.blocks.{i}.{j}.mlp.fc1 / fc2
    norm_list.{i}                               (norm_after_stage)       -> norm_list.{i}

mmseg's GSA is ``nn.MultiheadAttention`` (rows q, k, v of one in-projection); timm's is ``q`` and ``kv`` Linears
over the same rows (``kv`` = k then v), so the split moves the tensors unchanged.
"""
from __future__ import annotations

import re

from .report import CheckpointError, LoadReport
from .rules import BUFFER_RULES, Rule, StateDict, Tensors, apply_rules

_LAYER = r"^layers\.(\d+)\.(\d+)\."
_BLOCK = r"model.blocks.\1.\2."
_IN_PROJ = re.compile(_LAYER + r"attn\.attn\.in_proj_(weight|bias)$")

MMSEG_TWINS_TO_DENSEKIT: tuple[Rule, ...] = BUFFER_RULES + (
    Rule(r"^head\.", None, why="classifier head (ImageNet files)"),
    Rule(r"^norm\.", None, why="final norm of the classifier: mmseg's SVT never applies it"),
    Rule(r"^patch_embeds\.(\d+)\.projection\.", r"model.patch_embeds.\1.proj.", why="patch embedding"),
    Rule(r"^patch_embeds\.(\d+)\.norm\.", r"model.patch_embeds.\1.norm.", why="patch embedding"),
    Rule(r"^position_encodings\.(\d+)\.proj\.", r"model.pos_block.\1.proj.0.", why="position generator"),
    Rule(_LAYER + r"attn\.attn\.out_proj\.", _BLOCK + "attn.proj.", why="GSA output projection"),
    Rule(_LAYER + r"ffn\.layers\.0\.0\.", _BLOCK + "mlp.fc1.", why="MLP"),
    Rule(_LAYER + r"ffn\.layers\.1\.", _BLOCK + "mlp.fc2.", why="MLP"),
    Rule(_LAYER + r"(norm1|norm2|attn\.qkv|attn\.proj|attn\.sr|attn\.norm)\.", _BLOCK + r"\3.", why="block names"),
)


def is_mmseg_twins(keys: list[str]) -> bool:
    """Backbone keys (``backbone.`` stripped) in mmseg's Twins (SVT / PCPVT) layout."""
    return any(key.startswith("position_encodings.") for key in keys) and \
        any(key.startswith("patch_embeds.") for key in keys)


def _split_in_proj(state_dict: Tensors) -> tuple[StateDict, list[tuple[str, str]]]:
    """mmseg's GSA in-projections split into timm's ``q`` (first third) and ``kv`` (the rest); the other keys as
    they are. Returns the new dict and ``(old, new)`` names of the split tensors."""
    out, renamed = {}, []
    for key, value in state_dict.items():
        match = _IN_PROJ.match(key)
        if match is None:
            out[key] = value
            continue
        i, j, kind = match.groups()
        dim = value.shape[0] // 3
        for name, rows in (("q", value[:dim]), ("kv", value[dim:])):
            new = f"model.blocks.{i}.{j}.attn.{name}.{kind}"
            out[new] = rows.clone()
            renamed.append((key, new))
    return out, renamed


def mmseg_twins_to_densekit(state_dict: Tensors) -> tuple[StateDict, LoadReport]:
    """mmseg Twins-SVT backbone keys (``backbone.`` stripped) -> ``TwinsSVT`` keys (``model.*``, ``norm_list.*``).

    Raises:
        CheckpointError: a PCPVT (every block global attention: not an SVT) or a key the table does not know, named.
    """
    if not any(re.match(_LAYER + r"attn\.qkv\.", key) for key in state_dict):
        raise CheckpointError("an mmseg Twins backbone without locally-grouped attention (PCPVT): only Twins-SVT "
                              "(SVT) converts into densekit's TwinsSVT")
    split, renamed = _split_in_proj(state_dict)
    out, report = apply_rules(split, MMSEG_TWINS_TO_DENSEKIT)
    unknown = [key for key in out if not key.startswith(("model.", "norm_list."))]
    if unknown:
        raise CheckpointError(f"{len(unknown)} mmseg Twins keys have no densekit counterpart: "
                              + ", ".join(unknown[:8]))
    report.renamed = renamed + report.renamed  # the split in-projections, then the table's renames
    report.layout = "mmseg-twins"
    return out, report
