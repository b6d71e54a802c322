"""Check a converted densekit Swin against timm's Swin run on the same source weights and input.

The reference is built from the SOURCE checkpoint, independently of densekit's converters where
possible: official and timm files go through timm's own ``checkpoint_filter_fn``; mmseg and densekit
files are converted back to the official layout first (mmseg's patch-merging permutation is then
checked by the round trip). Two things are taken from the converted model instead, because timm
would do them differently: bias tables when the window changed (timm resizes them geometrically,
densekit bicubically by default) and the patch-embedding kernel when ``in_chans`` changed (timm's
Swin filter does not adapt it). timm's Swin has no absolute position embedding, so ``ape`` models
cannot be verified this way (``VerifyUnsupported``).
"""
from __future__ import annotations

import os
import re

import timm
import torch
from timm.models import adapt_input_conv
from timm.models.swin_transformer import checkpoint_filter_fn
from torch import nn

from ..backbones import create_backbone
from ..convert.detect import detect_layout
from ..convert.io import read_checkpoint, unwrap
from ..convert.official_swin import densekit_to_official
from ..convert.report import CheckpointError
from ..convert.rules import StateDict
from ..convert.swin import convert_swin
from ..layers.rel_pos_bias import table_window

# (embed_dim, depths) of densekit's presets -> timm's size names.
TIMM_SIZES = {
    (96, (2, 2, 6, 2)): "tiny",
    (96, (2, 2, 18, 2)): "small",
    (128, (2, 2, 18, 2)): "base",
    (192, (2, 2, 18, 2)): "large",
}
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
    if hasattr(ours, "pretrained_window_size"):
        raise VerifyUnsupported("no timm comparison for Swin V2 yet (tests/backbones/test_swin_v2.py compares it)")
    if ours.absolute_pos_embed is not None:
        raise VerifyUnsupported("timm's Swin has no absolute position embedding")
    ref, side = build_timm_swin(ours)
    weights = checkpoint_filter_fn(reference_state_dict(src, ours), ref)
    missing, unexpected = ref.load_state_dict(weights, strict=False)
    # The final norm is absent when the source had no out norm for the last stage; unused here.
    if unexpected or set(missing) - {"norm.weight", "norm.bias"}:
        raise CheckpointError(f"timm reference did not take the weights: missing {missing}, unexpected {unexpected}")
    x = torch.randn(1, ours.in_chans, side, side, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = ref.forward_intermediates(x, indices=list(ours.out_indices), norm=False, intermediates_only=True)
        got = ours(x)
    return [float((a - b).abs().max()) for a, b in zip(expected, got)]
