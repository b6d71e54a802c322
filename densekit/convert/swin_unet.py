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
came from a mirrored encoder stage (``LoadReport.mirrored``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .detect import detect_layout, detect_swin_unet_layout
from .io import strip_prefixes
from .report import CheckpointError, LoadReport
from .rules import BUFFER_RULES, Rule, StateDict, Tensors, apply_rules
from .swin import convert_swin
from .swin_v2 import convert_swin_v2, detect_v2_layout

SWIN_UNET_PREFIXES = ("module.", "swin_unet.")  # nn.DataParallel, the official SwinUnet wrapper


# ------------------------------------------------------------------------------------- key tables
def _up_stage(match: re.Match, context: Mapping[str, object]) -> str:
    return f"decode_head.stages.{int(match.group(1)) - 1}."


OFFICIAL_TO_DENSEKIT: tuple[Rule, ...] = BUFFER_RULES + (
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


def official_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Official Swin-Unet state dict (prefixes removed or not) -> densekit ``SwinUnet`` keys (tensors shared)."""
    out, report = apply_rules(strip_prefixes(state_dict, SWIN_UNET_PREFIXES), OFFICIAL_TO_DENSEKIT, progress=progress)
    report.kind, report.layout = "Swin-Unet", "official"
    return out, report


def densekit_to_official(state_dict: Tensors, prefix: str = "swin_unet.") -> StateDict:
    """densekit ``SwinUnet`` state dict -> the official layout (no buffers), keys prefixed with ``prefix``."""
    out, _ = apply_rules(state_dict, DENSEKIT_TO_OFFICIAL)
    return {prefix + key: value for key, value in out.items()}


def convert_swin_unet(state_dict: Tensors) -> tuple[StateDict, LoadReport]:
    """A whole Swin-Unet checkpoint's tensors (official or densekit layout, ``module.``/``swin_unet.`` prefixes
    or not) -> densekit ``SwinUnet`` keys, buffers dropped.

    Raises:
        CheckpointError: not a Swin-Unet checkpoint (an encoder-only Swin, say); names the first keys.
    """
    stripped = strip_prefixes(state_dict, SWIN_UNET_PREFIXES)
    layout = detect_swin_unet_layout(stripped)
    if layout is None:
        raise CheckpointError(f"not a Swin-Unet checkpoint (no layers_up / decode_head keys); first keys: "
                              f"{list(stripped)[:5]}")
    if layout == "official":
        return official_to_densekit(stripped)
    out, report = apply_rules(stripped, BUFFER_RULES)
    report.kind, report.layout = "Swin-Unet", "densekit"
    return out, report


# ------------------------------------------------------------------------------ ImageNet mirroring
def _decoder_prefix(up_index: int) -> str:
    """densekit name of the official ``layers_up.{up_index}.``."""
    return "decode_head.expand." if up_index == 0 else f"decode_head.stages.{up_index - 1}."


def mirror_encoder(swin: Tensors, num_stages: int
                   ) -> tuple[StateDict, dict[str, str], list[tuple[str, str]], list[str]]:
    """densekit Swin weights -> Swin-Unet keys, the official ``load_from`` rule on densekit names.

    Args:
        swin: a densekit Swin state dict (``convert_swin`` output: ``stages.{i}``, ``out_norms.{i}``...).
        num_stages: encoder stages of the target model (``n``; encoder stage ``i`` is mirrored into
            the decoder stage officially named ``layers_up.{n-1-i}``).

    Returns:
        ``(state_dict, placed, mirrored, dropped)``: the encoder keys under ``backbone.``, the checkpoint's last
        output norm as the bottleneck ``norm``, plus a decoder copy of every stage key; ``placed`` maps each
        encoder / bottleneck key to its Swin key; ``mirrored`` pairs (Swin key, decoder key) for the copies;
        ``dropped`` the out norms that have no place. Copies the model lacks (``downsample``, blocks beyond
        the decoder's depth) are left to the fit, as the official ``load_state_dict(strict=False)`` ignores them.
    """
    norms = [int(m.group(1)) for key in swin if (m := re.match(r"^out_norms\.(\d+)\.", key))]
    last = max(norms, default=-1)
    out: StateDict = {}
    placed: dict[str, str] = {}
    mirrored: list[tuple[str, str]] = []
    dropped: list[str] = []
    for key, value in swin.items():
        norm = re.match(r"^out_norms\.(\d+)\.(.*)$", key)
        if norm:
            if int(norm.group(1)) == last:  # official: the classifier's final norm loads into Swin-Unet's `norm`
                out["norm." + norm.group(2)], placed["norm." + norm.group(2)] = value, key
            else:
                dropped.append(key)
            continue
        out["backbone." + key], placed["backbone." + key] = value, key
        stage = re.match(r"^stages\.(\d+)\.(.*)$", key)
        if stage and num_stages - 1 - int(stage.group(1)) >= 0:
            target = _decoder_prefix(num_stages - 1 - int(stage.group(1))) + stage.group(2)
            out[target] = value
            mirrored.append((key, target))
    return out, placed, mirrored, dropped


_V1_KEY = re.compile(r"relative_position_bias_table$")
_V2_KEY = re.compile(r"cpb_mlp|continuous_position_bias_mlp|logit_scale$")


def imagenet_encoder(state_dict: Tensors, version: int = 1) -> tuple[StateDict, LoadReport]:
    """ImageNet Swin weights (unwrapped) -> densekit Swin keys for the encoder of a ``SwinUnet(version=...)``:
    V1 through ``convert_swin`` (official, timm, mmseg, densekit), V2 through ``convert_swin_v2`` (official,
    timm, HF, densekit).

    Raises:
        CheckpointError: a file of the other Swin version, named as such.
    """
    keys = list(state_dict)
    v1_file, v2_file = any(_V1_KEY.search(k) for k in keys), any(_V2_KEY.search(k) for k in keys)
    if version == 2 and v1_file and not v2_file:
        raise CheckpointError("a Swin V1 checkpoint (relative_position_bias_table keys, no cpb_mlp / logit_scale) "
                              "given to a Swin V2 Swin-Unet (version=2): V1 attention weights do not fit V2 blocks; "
                              "build the Swin-Unet with version=1 for this file, or give Swin V2 weights")
    if version == 1 and v2_file:
        raise CheckpointError("a Swin V2 checkpoint (cpb_mlp / logit_scale keys) given to a Swin V1 Swin-Unet "
                              "(version=1): build the Swin-Unet with version=2 for this file")
    if version == 2:
        return convert_swin_v2(state_dict, detect_v2_layout(state_dict))
    return convert_swin(state_dict, detect_layout(state_dict))


def imagenet_to_swin_unet(state_dict: Tensors, num_stages: int, version: int = 1) -> tuple[StateDict, LoadReport]:
    """ImageNet Swin weights (unwrapped; a V1 or V2 layout as ``imagenet_encoder`` reads for ``version``) ->
    densekit ``SwinUnet`` keys, the encoder mirrored into the decoder (``mirror_encoder``; V2 blocks mirror into
    the V2 decoder's key for key).

    Returns:
        ``(state_dict, report)``; ``renamed`` and ``mirrored`` name the checkpoint's own keys. What does not
        fit the model is for ``fit`` to drop (``fit.SWIN_UNET_IMAGENET_POLICY``).
    """
    swin, base = imagenet_encoder(state_dict, version)
    merged, placed, mirrored, dropped = mirror_encoder(swin, num_stages)
    origin = {new: old for old, new in base.renamed}
    report = LoadReport(kind="Swin-Unet", layout=base.layout, dropped=base.dropped,
                        permuted=[f"backbone.{key}" for key in base.permuted])
    report.renamed = [(origin.get(src, src), key) for key, src in placed.items() if origin.get(src, src) != key]
    report.mirrored = [(origin.get(src, src), dst) for src, dst in mirrored]
    report.dropped += [(origin.get(key, key), "an output norm Swin-Unet has no place for") for key in dropped]
    return merged, report
