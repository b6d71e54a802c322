"""Check a converted densekit Swin (V1 or V2) or ViT against timm's run on the same source weights and input.

A ViT (``verify_vit_conversion``) is compared with timm's ``VisionTransformer`` given the source file through
timm's own ``checkpoint_filter_fn`` (official MAE, DINO, DINOv2 and timm files); mmseg files are converted by
densekit first (timm reads no mmseg layout), so for them the check covers the model, not the key table.

The reference is built from the SOURCE checkpoint, independently of densekit's converters where
possible: official and timm files go through timm's own ``checkpoint_filter_fn``; mmseg and densekit
files are converted back to the official layout first (mmseg's patch-merging permutation is then
checked by the round trip). Two things are taken from the converted model instead, because timm
would do them differently: bias tables when the window changed (timm resizes them geometrically,
densekit bicubically by default) and the patch-embedding kernel when ``in_chans`` changed (timm's
Swin filter does not adapt it). timm's Swin has no absolute position embedding, so ``ape`` models
cannot be verified this way (``VerifyUnsupported``).

Swin V2 is checked against timm's ``SwinTransformerV2`` built with the model's window and the pretrained windows
the conversion used (``pretrained_window_sizes``), loaded the same way: official and timm files through timm's
filter, every other layout (HF, mmpretrain, SimMIM, densekit) converted and written back in the official layout.
Nothing depends on the window in V2's weights, so nothing is taken from the converted model.
"""
from __future__ import annotations

import os
import re

import timm
import torch
from timm.models import adapt_input_conv
from timm.models.swin_transformer import checkpoint_filter_fn
from timm.models.swin_transformer_v2 import checkpoint_filter_fn as v2_checkpoint_filter_fn
from torch import nn

from ..backbones import create_backbone
from ..backbones.vit import VIT_PRESETS, is_timm_vit
from ..convert.detect import detect_layout
from ..convert.io import read_checkpoint, unwrap
from ..convert.official_swin import densekit_to_official
from ..convert.report import CheckpointError
from ..convert.rules import StateDict
from ..convert.swin import convert_swin
from ..convert.swin_v2 import convert_swin_v2, detect_v2_layout
from ..convert.vit import convert_vit, detect_vit_layout
from ..layers.rel_pos_bias import table_window

# (embed_dim, depths) of densekit's presets -> timm's size names.
TIMM_SIZES = {
    (96, (2, 2, 6, 2)): "tiny",
    (96, (2, 2, 18, 2)): "small",
    (128, (2, 2, 18, 2)): "base",
    (192, (2, 2, 18, 2)): "large",
}
_BUFFER = re.compile(r"(relative_position_index|relative_coords_table|attn_mask)$")
_NOT_BACKBONE = re.compile(r"^(head|fc|classifier|decode_head|auxiliary_head|neck|data_preprocessor)\.")


class VerifyUnsupported(Exception):
    """The model cannot be compared with timm's Swin (no timm counterpart)."""


def build_timm_swin(model: nn.Module) -> tuple[nn.Module, int]:
    """timm's Swin with ``model``'s size, window and ``in_chans``, and the image side it expects.

    The side is ``patch * 2^(stages-1) * window`` (224 for window 7, 384 for window 12), so the
    last stage is exactly one window, as in the released models.
    """
    depths = tuple(len(stage.blocks) for stage in model.stages)
    size = TIMM_SIZES.get((model.patch_embed.proj.out_channels, depths))
    if size is None or model.patch_size != 4:
        raise VerifyUnsupported(f"no timm Swin with embed_dim {model.patch_embed.proj.out_channels}, depths {depths}")
    window = model.window_size
    side = model.patch_size * 2 ** (len(depths) - 1) * window
    name = f"swin_{size}_patch4_window{window}_{side}"
    if not timm.is_model(name):  # e.g. swin_tiny at window 12: same architecture, other kwargs
        name = f"swin_{size}_patch4_window7_224"
    ref = timm.create_model(name, pretrained=False, num_classes=0, window_size=window, img_size=side,
                            in_chans=model.in_chans)
    return ref.eval(), side


def build_timm_swin_v2(model: nn.Module) -> tuple[nn.Module, int]:
    """timm's Swin V2 with ``model``'s size, window, pretrained windows and ``in_chans``, and its image side
    (``patch * 2^(stages-1) * window``: the last stage is one window, 512 px at window 16)."""
    depths = tuple(len(stage.blocks) for stage in model.stages)
    size = TIMM_SIZES.get((model.patch_embed.proj.out_channels, depths))
    if size is None or model.patch_size != 4:
        raise VerifyUnsupported(f"no timm Swin V2 with embed_dim {model.patch_embed.proj.out_channels}, "
                                f"depths {depths}")
    side = model.patch_size * 2 ** (len(depths) - 1) * model.window_size
    name = f"swinv2_{size}_window8_256"
    if not timm.is_model(name):  # large has no window-8 release: same architecture, other kwargs
        name = f"swinv2_{size}_window12_192"
    ref = timm.create_model(name, pretrained=False, num_classes=0, img_size=side, window_size=model.window_size,
                            pretrained_window_sizes=tuple(model.pretrained_window_size), in_chans=model.in_chans)
    return ref.eval(), side


def reference_state_dict_v2(src: str | os.PathLike, model: nn.Module) -> StateDict:
    """The source Swin V2 weights in official or timm layout (what timm's V2 filter reads), backbone only."""
    state_dict = unwrap(read_checkpoint(src))
    layout = detect_v2_layout(state_dict)
    if layout not in ("official", "timm"):
        state_dict = densekit_to_official(convert_swin_v2(state_dict, layout)[0])
    state_dict = {k: v for k, v in state_dict.items() if not _NOT_BACKBONE.match(k)}
    weight = state_dict.get("patch_embed.proj.weight")
    if weight is not None and weight.shape[1] != model.in_chans:
        state_dict["patch_embed.proj.weight"] = adapt_input_conv(model.in_chans, weight)
    return state_dict


def reference_state_dict(src: str | os.PathLike, model: nn.Module) -> StateDict:
    """The source weights in official or timm layout, fitted to ``model``'s window and ``in_chans``."""
    state_dict = unwrap(read_checkpoint(src))
    layout = detect_layout(state_dict)
    if layout not in ("official", "timm"):
        state_dict = densekit_to_official(convert_swin(state_dict, layout)[0])
    state_dict = {k: v for k, v in state_dict.items() if not _NOT_BACKBONE.match(k)}
    if "absolute_pos_embed" in state_dict:
        raise VerifyUnsupported("timm's Swin has no absolute position embedding")
    tables = [k for k in state_dict if k.endswith("relative_position_bias_table")]
    if tables and table_window(state_dict[tables[0]]) != model.window_size:
        # Blocks keep their place in every layout: layers.i.blocks.j <-> stages.i.blocks.j.
        ours = model.state_dict()
        for key in tables:
            state_dict[key] = ours[re.sub(r"^layers\.", "stages.", key)]
    weight = state_dict.get("patch_embed.proj.weight")
    if weight is not None and weight.shape[1] != model.in_chans:
        state_dict["patch_embed.proj.weight"] = adapt_input_conv(model.in_chans, weight)
    return state_dict


def verify_conversion(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model_name: str,
    window_size: int | None = None,
    in_chans: int | None = None,
    seed: int = 0,
) -> list[float]:
    """Largest absolute difference per stage between densekit (loaded from ``dst``) and timm
    (loaded from ``src``) on one random ``(1, in_chans, S, S)`` image, ``S`` from ``build_timm_swin``.

    Raises:
        VerifyUnsupported: no timm counterpart (other sizes, ``ape``).
        CheckpointError: timm could not take the reference weights.
    """
    options = {k: v for k, v in (("window_size", window_size), ("in_chans", in_chans)) if v is not None}
    ours = create_backbone(model_name, pretrained=str(dst), out_norm=False, **options).eval()
    if hasattr(ours, "pretrained_window_size"):  # Swin V2, at the pretrained windows dst's meta names
        ref, side = build_timm_swin_v2(ours)
        weights = v2_checkpoint_filter_fn(reference_state_dict_v2(src, ours), ref)
    else:
        if ours.absolute_pos_embed is not None:
            raise VerifyUnsupported("timm's Swin has no absolute position embedding")
        ref, side = build_timm_swin(ours)
        weights = checkpoint_filter_fn(reference_state_dict(src, ours), ref)
    missing, unexpected = ref.load_state_dict(weights, strict=False)
    # The final norm is absent when the source had no out norm for the last stage; unused here. timm V2 keeps
    # its recomputed tables and masks as non-persistent buffers in some versions, persistent in others.
    missing = [k for k in missing if k not in ("norm.weight", "norm.bias") and not _BUFFER.search(k)]
    if unexpected or missing:
        raise CheckpointError(f"timm reference did not take the weights: missing {missing}, unexpected {unexpected}")
    x = torch.randn(1, ours.in_chans, side, side, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=list(ours.out_indices), norm=False, intermediates_only=True)
        got = ours(x)
    return [float((a - b).abs().max()) for a, b in zip(expected, got)]


_NOT_VIT = re.compile(r"^(head|fc_norm|decoder_|decoder\.)")


def verify_vit_conversion(src: str | os.PathLike, dst: str | os.PathLike, model_name: str,
                          seed: int = 0) -> list[float]:
    """Largest absolute difference per returned block between densekit's ViT (loaded from ``dst``) and timm's
    ``forward_intermediates(norm=False)`` (loaded from ``src``) on one random image at the model's ``img_size``.

    Raises:
        CheckpointError: timm could not take the reference weights.
    """
    ours = create_backbone(model_name, pretrained=str(dst)).eval()
    timm_name = VIT_PRESETS.get(model_name, model_name)
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0).eval()
    state_dict = unwrap(read_checkpoint(src))
    if detect_vit_layout(state_dict) in ("mmseg", "mmseg_mae", "densekit"):
        state_dict = convert_vit(state_dict, detect_vit_layout(state_dict))[0]
    state_dict = {k: v for k, v in state_dict.items() if not _NOT_VIT.match(k)}
    weights = timm.models.vision_transformer.checkpoint_filter_fn(state_dict, ref)
    missing, unexpected = ref.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"norm.weight", "norm.bias"}:
        raise CheckpointError(f"timm reference did not take the weights: missing {missing}, unexpected {unexpected}")
    side = ref.patch_embed.img_size
    x = torch.randn(1, ref.patch_embed.proj.in_channels, *side, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=list(ours.out_indices), norm=False, intermediates_only=True)
        got = ours(x)
    return [float((a - b).abs().max()) for a, b in zip(expected, got)]


def is_vit(model_name: str) -> bool:
    """Whether ``densekit convert --model`` names a plain ViT (``vit_b`` or a timm ViT)."""
    return is_timm_vit(VIT_PRESETS.get(model_name, model_name))
