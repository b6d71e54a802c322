"""Which layout a state dict is in, for every source densekit reads (pure functions of the keys).

    detect_layout(sd)              a Swin backbone: 'official' | 'timm' | 'mmseg' | 'densekit' | 'simmim' (pretraining)
    detect_segmentor_layout(sd)    a whole UPerNet: 'hf' | 'mmseg' | 'densekit'
    detect_detector_layout(sd)     a whole RPN: 'torchvision' | 'mmdet' (2.x rpn_head.*, 3.x bbox_head.*) | 'densekit'
    detect_swin_unet_layout(sd)    a whole Swin-Unet: 'official' | 'densekit' | None (not a Swin-Unet)
    architecture(keys)             the model family a whole checkpoint belongs to, for error hints
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from .report import CheckpointError
from .rules import Tensors, part
from .simmim import is_simmim
from .swin_v2 import detect_v2_layout

LAYOUTS = ("official", "timm", "mmseg", "densekit", "simmim")
SEGMENTOR_LAYOUTS = ("hf", "mmseg", "densekit")
DETECTOR_LAYOUTS = ("torchvision", "mmdet", "densekit")
SWIN_UNET_LAYOUTS = ("official", "densekit")

_DENSEKIT_SWIN = re.compile(r"^stages\.\d+\.blocks\.\d+\.attn\.qkv\.")
_TIMM_DOWNSAMPLE = re.compile(r"^layers\.[1-9]\d*\.downsample\.")
_HF_KEY = re.compile(r"^backbone\.(swin\.|embeddings\.|encoder\.|hidden_states_norms\.)"
                     r"|^(decode_head|auxiliary_head)\.classifier\.|\.batch_norm\.")
# mmdetection 3.x's RPN detector holds its RPNHead as ``bbox_head`` (2.x: ``rpn_head``).
_MMDET3_RPN_HEAD = re.compile(r"^bbox_head\.rpn_(conv|cls|reg)\.")
_OFFICIAL_SWIN_UNET = re.compile(r"^(layers_up|concat_back_dim|norm_up|up|output)\.")
_DENSEKIT_SWIN_UNET = re.compile(r"^decode_head\.(expand|stages|up|conv_seg)\.")
# Keys only one model family has: (family, its densekit class, key prefix).
_FAMILIES = (
    ("Swin-Unet", "SwinUnet", "decode_head.expand."),
    ("RPN", "RPN", "rpn_head."),
    ("RPN", "RPN", "bbox_head.rpn_"),
    ("UPerNet", "EncoderDecoder", "decode_head.psp_modules."),
)


def is_swin_v2(keys: Iterable[str]) -> bool:
    """Whether state-dict keys are a Swin V2's (its position-bias MLP ``cpb_mlp`` or ``logit_scale``), in any layout."""
    return any("cpb_mlp" in key or key.endswith("logit_scale") for key in keys)


def _own_backbone(backbone: Tensors) -> bool | None:
    """Whether a whole model's ``backbone.*`` part is a Swin V2 in densekit's own layout (True) or in another
    layout (False); None when it is not a Swin V2 at all (V1 and timm backbones are told apart by the callers)."""
    if not is_swin_v2(backbone):
        return None
    return detect_v2_layout(backbone) == "densekit"


def detect_layout(state_dict: Tensors) -> str:
    """Which layout an unwrapped Swin state dict is in: ``'official'``, ``'timm'``, ``'mmseg'``, ``'densekit'`` or
    ``'simmim'`` (a SimMIM pretraining file: the encoder is in one of the others, ``convert.simmim``).

    Official and timm differ only in where patch merging lives: official has
    ``layers.0.downsample``, timm has ``layers.{last}.downsample`` (the head is not used alone:
    headless checkpoints exist).

    Raises:
        CheckpointError: not a Swin V1 state dict in a known layout.
    """
    keys = list(state_dict)
    if is_swin_v2(keys):
        raise CheckpointError("a Swin V2 checkpoint (cpb_mlp / logit_scale keys): this model is Swin V1; load it "
                              "into a V2 model (swinv2_t/s/b/l) instead")
    if is_simmim(keys):
        return "simmim"
    if any(".attn.w_msa." in key or key.startswith("patch_embed.projection.") or ".ffn.layers." in key for key in keys):
        return "mmseg"
    if any(_DENSEKIT_SWIN.match(key) for key in keys):
        return "densekit"
    if any(key.startswith("layers.") for key in keys):
        if "layers.0.downsample.reduction.weight" in state_dict:
            return "official"
        if any(_TIMM_DOWNSAMPLE.match(key) for key in keys) or "head.fc.weight" in state_dict:
            return "timm"
        if "head.weight" in state_dict:
            return "official"
        raise CheckpointError("Swin state dict without downsample or head keys: cannot tell official from timm")
    raise CheckpointError(f"not a Swin state dict in a known layout ({', '.join(LAYOUTS)}); first keys: {keys[:5]}")


def detect_segmentor_layout(state_dict: Tensors) -> str:
    """``'hf'`` (HF ``UperNetForSemanticSegmentation`` names), ``'mmseg'`` (an mmseg-style segmentor whose
    backbone is not in densekit's layout) or ``'densekit'``; the backbone part decides between the last two.

    Raises:
        CheckpointError: no ``decode_head`` (a backbone-only checkpoint).
    """
    keys = list(state_dict)
    if not any(key.startswith("decode_head.") for key in keys):
        raise CheckpointError("not a segmentor checkpoint: no decode_head.* keys (a backbone-only checkpoint? "
                              f"convert it with --model instead); first keys: {keys[:5]}")
    if any(_HF_KEY.search(key) for key in keys):
        return "hf"
    if any(key.startswith("backbone.downsample_layers.") for key in keys):
        return "mmseg"  # an mmseg ConvNeXt UPerNet (mmpretrain's ConvNeXt: convert.convnext)
    if any(key.startswith("backbone.position_encodings.") for key in keys):
        return "mmseg"  # an mmseg Twins UPerNet (convert.twins)
    own = _own_backbone(part(state_dict, "backbone."))
    if own is not None:  # a Swin V2 backbone: densekit's own keys, or an mmseg-style model around another layout
        return "densekit" if own else "mmseg"
    try:
        return "densekit" if detect_layout(part(state_dict, "backbone.")) == "densekit" else "mmseg"
    except CheckpointError:  # not a Swin: a timm backbone, whose keys are densekit's own
        return "densekit"


def detect_detector_layout(state_dict: Tensors) -> str:
    """``'torchvision'`` (``rpn.head.*``), ``'mmdet'`` (3.x ``bbox_head.rpn_*``, or 2.x ``rpn_head.*`` with an
    mmdet backbone) or ``'densekit'`` (``rpn_head.*``, told apart from mmdet 2.x by the backbone part).

    Raises:
        CheckpointError: no RPN head keys in any layout; names the first keys.
    """
    keys = list(state_dict)
    if any(key.startswith("rpn.head.") for key in keys):
        return "torchvision"
    if any(_MMDET3_RPN_HEAD.match(key) for key in keys):
        return "mmdet"
    if not any(key.startswith("rpn_head.") for key in keys):
        kind = "a segmentor" if any(key.startswith("decode_head.") for key in keys) else "not an RPN"
        raise CheckpointError(f"{kind} checkpoint: no rpn_head.* (mmdet 2.x, densekit), bbox_head.rpn_* (mmdet 3.x) "
                              f"or rpn.head.* (torchvision) keys; first keys: {keys[:5]}")
    backbone = part(state_dict, "backbone.")
    own = _own_backbone(backbone)
    if own is not None:  # a Swin V2 backbone: densekit's own keys, or an mmdet-style model around another layout
        return "densekit" if own else "mmdet"
    try:  # a Swin: densekit's own layout, or mmdet's (= mmseg's)
        return "densekit" if detect_layout(backbone) == "densekit" else "mmdet"
    except CheckpointError:  # a timm backbone: densekit keeps it under backbone.model
        return "densekit" if any(key.startswith("model.") for key in backbone) else "mmdet"


def detect_swin_unet_layout(state_dict: Tensors) -> str | None:
    """``'official'`` (``layers_up``/``concat_back_dim``... once ``module.``/``swin_unet.`` are removed),
    ``'densekit'`` (``decode_head.expand``...) or None (not a Swin-Unet checkpoint: an encoder-only Swin, say)."""
    keys = list(state_dict)
    if any(_DENSEKIT_SWIN_UNET.match(key) for key in keys):
        return "densekit"
    if any(_OFFICIAL_SWIN_UNET.match(key) for key in keys):
        return "official"
    return None


def architecture(keys: Iterable[str]) -> tuple[str, str] | None:
    """``(family, densekit class)`` a whole state dict's keys belong to, e.g. ``('Swin-Unet', 'SwinUnet')``."""
    keys = list(keys)
    for family, cls, prefix in _FAMILIES:
        if any(key.startswith(prefix) for key in keys):
            return family, cls
    return None
