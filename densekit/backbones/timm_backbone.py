"""Any timm model with ``feature_info`` (ConvNeXt, RegNet, ResNet, Swin, ...) as a densekit backbone.

densekit wraps timm, never copies it (DESIGN.md §2): the full timm model is built, its stride 4,
8, 16 and 32 levels are picked from ``feature_info``, layers after the last wanted level are pruned,
and ``forward_intermediates`` returns the NCHW maps. Weights load through timm's own
``pretrained_cfg_overlay=dict(file=...)`` path, so timm's checkpoint filter (e.g. official Swin
to timm) and in_chans adaptation apply, from a local ``.pth``/``.safetensors`` file only.
"""
from __future__ import annotations

import math
import os
import pickle

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from ..convert.io import is_refusal, refused_message
from ..convert.report import CheckpointError
from .base import Backbone, local_checkpoint, output_size

# The four levels a dense head consumes; ResNet/RegNet also list a stride-2 stem, which is skipped.
LEVEL_STRIDES = (4, 8, 16, 32)

# Constructor arguments that free a timm family from the input size it was built for. timm's Swin
# asserts img_size (224) unless strict_img_size=False, which builds the shift mask per input and
# keeps the trained windows (set_input_size would rescale them with the grid). Its in-block window
# padding is not used: forward() pads the image to window multiples instead (see _pad_multiple).
_ANY_SIZE_KWARGS: dict[str, dict[str, bool]] = {
    "swin_transformer": {"strict_img_size": False},
    "swin_transformer_v2": {"strict_img_size": False},
}


def is_timm_model(name: str) -> bool:
    """Whether ``name`` (optionally with a ``.tag``) is a timm model that ``TimmBackbone`` can build."""
    return timm.is_model(name)


class TimmBackbone(Backbone):
    """A timm model returning its stride 4/8/16/32 feature maps, at any input size.

    Args:
        model_name: a timm model name whose ``feature_info`` has stride 4, 8, 16 and 32 levels.
        pretrained: local checkpoint (``.pth``, ``.pt``, ``.safetensors``; a bare state dict or one
            under ``state_dict``/``model``) in timm's or the model's official layout; None = random init.
        out_indices: which of the four levels (0 = stride 4 ... 3 = stride 32) to return, ascending.
        frozen_stages: -1 freezes nothing; k >= 0 freezes the stem and the first k stages (mmseg).
        norm_eval: keep BatchNorm layers in eval mode during training.
        drop_path_rate: stochastic depth rate, passed to timm.
        with_cp: activation checkpointing through timm's ``set_grad_checkpointing``.
        in_chans: input channels ``C``; pretrained stems are adapted by timm (e.g. summed for 1).
        output_stride: None = timm's own strides (the four levels 4..32). 8 or 16 dilates the model's later stages
            through timm's ``features_only=True, output_stride=...`` (e.g. mmseg's "d8" MobileNetV3); then
            ``out_indices`` index *all* of timm's ``feature_info`` levels (MobileNetV3-Large: 0..4 at strides 2, 4,
            8, 8, 8), as dilated levels share a stride. Models whose timm class does not take it are refused.
        out_norm: a ``LayerNorm2d(C_i, eps=1e-6)`` on each returned map (``out_norms.{i}`` for ``i`` in
            ``out_indices``), as HF's ``ConvNextBackbone`` (``hidden_states_norms``) and mmseg's ConvNeXt
            (``norm0..3``) normalise every stage output; ImageNet checkpoints lack them (unit init).

    Shapes:
        input ``(B, in_chans, H, W)`` for any ``H, W``; output ``[(B, out_channels[i], ceil(H / s_i),
        ceil(W / s_i))]`` with ``s_i = strides[i]``, one map per ``out_indices`` entry.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        out_indices: tuple[int, ...] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        in_chans: int = 3,
        out_norm: bool = False,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        out_indices = _check_arguments(model_name, out_indices, frozen_stages, output_stride)
        pretrained = local_checkpoint(pretrained, model_name)  # never timm's pretrained=True (a hub download)
        if pretrained is not None and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
        self.model_name = model_name
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        if output_stride is None:
            model, info, self._take = _build_trunk(model_name, pretrained, out_indices, in_chans, drop_path_rate)
        else:
            model, info, self._take = _build_dilated(model_name, pretrained, out_indices, frozen_stages, in_chans,
                                                     drop_path_rate, output_stride)
        self.model = model
        self.uses_intermediates = hasattr(model, "forward_intermediates")  # timm's features_only wrappers lack it
        self.out_channels = [info[i]["num_chs"] for i in out_indices]
        level_strides = [entry["reduction"] for entry in info]
        self.strides = [level_strides[i] for i in out_indices]
        self.out_norms = nn.ModuleDict(
            {str(i): LayerNorm2d(c, eps=1e-6) for i, c in zip(out_indices, self.out_channels)}
        ) if out_norm else None
        if with_cp and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)

        stage_names = [_resolve_name(model, entry["module"]) for entry in info]
        self._frozen_names = _frozen_names(model, stage_names, frozen_stages)
        self._pad_to = _pad_multiple(model, stage_names[: out_indices[-1] + 1], level_strides)
        self.freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        modules = [self.model.get_submodule(name) for name in self._frozen_names]
        if self.out_norms is not None:  # a frozen stage keeps its output norm too (as densekit's Swin)
            modules += [norm for i, norm in self.out_norms.items() if int(i) < self.frozen_stages]
        return modules

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of ``x``.

        Args:
            x: images ``(B, in_chans, H, W)``, any ``H, W``.

        Returns:
            ``[(B, out_channels[i], ceil(H / strides[i]), ceil(W / strides[i]))]``, NCHW (normalised per
            position over channels with ``out_norm``).
        """
        h, w = x.shape[-2:]
        # Pad right/bottom (see _pad_multiple): strided and patchify convs floor odd sizes (ConvNeXt's
        # 4x4 stem gives floor(H/4), not ceil), Swin's patch embedding rejects sides not divisible by
        # 4, and Swin's own window padding is wrong. Padded, every level crops to exactly ceil(H / s).
        pad_h, pad_w = -h % self._pad_to[0], -w % self._pad_to[1]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if self.uses_intermediates:
            feats = self.model.forward_intermediates(x, indices=self._take, intermediates_only=True)
        else:
            feats = self.model(x)
            if getattr(self.model, "output_fmt", "NCHW") == "NHWC":  # timm's Format is a str enum
                feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        feats = [f[..., :output_size(h, s), :output_size(w, s)] for f, s in zip(feats, self.strides)]
        if self.out_norms is not None:
            feats = [self.out_norms[str(i)](f) for i, f in zip(self.out_indices, feats)]
        return feats


def _check_arguments(model_name: str, out_indices: tuple[int, ...], frozen_stages: int,
                     output_stride: int | None) -> tuple[int, ...]:
    """``out_indices`` as a tuple, after checking the model exists and the arguments are in range (with
    ``output_stride``, the level count is only known once built: ``_build_dilated`` checks the ranges)."""
    if not is_timm_model(model_name):
        raise ValueError(f"{model_name!r} is not a timm model")
    out_indices = tuple(out_indices)
    ascending = list(out_indices) == sorted(set(out_indices))
    if output_stride is not None:
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be None, 8, 16 or 32, got {output_stride!r}")
        if not out_indices or not ascending or min(out_indices) < 0:
            raise ValueError(f"out_indices must be ascending, unique and non-negative, got {out_indices}")
        return out_indices
    if not out_indices or not ascending or not set(out_indices) <= {0, 1, 2, 3}:
        raise ValueError(f"out_indices must be ascending, unique and within 0..3, got {out_indices}")
    if not -1 <= frozen_stages <= len(LEVEL_STRIDES):
        raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
    return out_indices


def _build_trunk(model_name: str, pretrained: str | None, out_indices: tuple[int, ...], in_chans: int,
                 drop_path_rate: float) -> tuple[nn.Module, list[dict], list[int]]:
    """The timm model for ``out_indices``, as ``(model, info, take)``.

    ``info`` holds the ``feature_info`` entries of the stride 4, 8, 16 and 32 levels, ``take`` the
    ``feature_info`` indices of the wanted ones. A model with ``forward_intermediates`` is pruned after the last
    wanted level; older families lack it and are rebuilt as timm's ``features_only`` wrapper.
    """
    kwargs = dict(in_chans=in_chans, drop_path_rate=drop_path_rate)
    for module, extra in _ANY_SIZE_KWARGS.items():
        if timm.models.is_model_in_modules(model_name, [module]):
            kwargs.update(extra)
    model = _create(model_name, pretrained, num_classes=0, **kwargs)
    levels = _level_indices(model, model_name)
    info = [model.feature_info[i] for i in levels]
    take = [levels[i] for i in out_indices]
    if not hasattr(model, "forward_intermediates"):
        return _create(model_name, pretrained, features_only=True, out_indices=take, **kwargs), info, take
    if hasattr(model, "prune_intermediate_layers"):
        model.prune_intermediate_layers(take, prune_norm=True, prune_head=True)
    return model, info, take


def _build_dilated(model_name: str, pretrained: str | None, out_indices: tuple[int, ...], frozen_stages: int,
                   in_chans: int, drop_path_rate: float, output_stride: int) -> tuple[nn.Module, list[dict], list[int]]:
    """timm's ``features_only`` model dilated to ``output_stride``, as ``(model, info, take)`` (see _build_trunk).

    Only timm's feature wrappers take ``output_stride`` for every family that supports it (MobileNetV3's
    classifier class does not), so the wrapper is built, for all levels first (random init) to read
    ``feature_info``, then for the wanted ones. timm's ``feature_info`` reductions are the dilated strides
    (checked at output_stride=8: MobileNetV3, ResNet, RegNet 2, 4, 8, 8, 8; ConvNeXt 4, 8, 8, 8), so no probe
    forward is needed; a model that accepts the argument but still reaches another stride is refused rather
    than reported wrong.
    """
    kwargs = dict(in_chans=in_chans, drop_path_rate=drop_path_rate, features_only=True, output_stride=output_stride)
    try:
        probe = timm.create_model(model_name, pretrained=False, **kwargs)
    except TypeError as error:
        if "output_stride" not in str(error):
            raise
        raise ValueError(f"timm model {model_name!r} does not take output_stride (timm: {error})") from None
    info = [dict(entry) for entry in probe.feature_info.info]
    reductions = [entry["reduction"] for entry in info]
    if max(reductions) != output_stride:
        raise ValueError(f"timm model {model_name!r} ignores output_stride={output_stride} "
                         f"(feature_info reductions: {reductions})")
    if out_indices[-1] >= len(info):
        raise ValueError(f"out_indices must be within 0..{len(info) - 1} for {model_name!r} with output_stride="
                         f"{output_stride} (strides {reductions}), got {out_indices}")
    if not -1 <= frozen_stages <= len(info):
        raise ValueError(f"frozen_stages must be in -1..{len(info)}, got {frozen_stages}")
    take = list(out_indices)
    return _create(model_name, pretrained, out_indices=take, **kwargs), info, take


def _frozen_names(model: nn.Module, stage_names: list[str], frozen_stages: int) -> list[str]:
    """Names of the submodules ``frozen_stages`` freezes: the stem (the children before the first stage) and the
    first ``frozen_stages`` stages; none for -1. Stages pruned away (``''``) have nothing left to freeze."""
    if frozen_stages < 0:
        return []
    first_stage = stage_names[0].split(".")[0]
    stem_names = []
    for name, _ in model.named_children():
        if name == first_stage:
            break
        stem_names.append(name)
    return stem_names + [n for n in stage_names[:frozen_stages] if n]


def _create(model_name: str, pretrained: str | None, **kwargs) -> nn.Module:
    """``timm.create_model`` with weights from a local file only: ``file`` in the overlay outranks
    every hub/URL source in timm's resolution, so nothing is downloaded."""
    if pretrained is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    overlay = dict(file=os.fspath(pretrained))
    try:
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (pickle.UnpicklingError, RuntimeError) as error:
        # timm's loader uses torch.load(weights_only=True) too, but its refusal is a bare RuntimeError that names
        # neither the file nor the way out; anything else (a shape mismatch, say) is timm's own message.
        if not is_refusal(error):
            raise
        hint = ("if you trust the file, re-save just its state dict (torch.load(..., weights_only=False)"
                "['state_dict'] or the model's state_dict()) and pass that file")
        raise CheckpointError(refused_message(os.fspath(pretrained), error, pretrained, hint=hint)) from error


def _level_indices(model: nn.Module, model_name: str) -> list[int]:
    """Indices into ``model.feature_info`` of the first stride 4, 8, 16 and 32 entries."""
    reductions = [entry["reduction"] for entry in getattr(model, "feature_info", [])]
    missing = [s for s in LEVEL_STRIDES if s not in reductions]
    if missing:
        raise ValueError(f"timm model {model_name!r} has no feature levels at strides {missing} "
                         f"(feature_info reductions: {reductions})")
    return [reductions.index(s) for s in LEVEL_STRIDES]


def _pad_multiple(model: nn.Module, stage_names: list[str], strides: list[int]) -> tuple[int, int]:
    """Input (height, width) multiple under which ``model`` pads nothing itself.

    That is the largest stride kept and, for window attention, stride x window at every stage: timm's
    Swin pads a grid that is not a window multiple *after* the cyclic shift but builds the shift mask
    on the padded grid, so tokens at one image border attend to the opposite border (official Swin
    and mmseg pad before shifting). For Swin-T (window 7) this is 224.
    """
    multiple = [1, 1]
    for name, stride in zip(stage_names, strides):
        if not name:
            continue
        multiple = [math.lcm(m, stride) for m in multiple]
        stage = model.get_submodule(name)
        window = next((m.window_size for m in stage.modules() if hasattr(m, "window_size")), None)
        if window is not None:
            window = (window, window) if isinstance(window, int) else tuple(window)
            multiple = [math.lcm(m, stride * ws) for m, ws in zip(multiple, window)]
    return multiple[0], multiple[1]


def _resolve_name(model: nn.Module, name: str) -> str:
    """``name`` as it exists in ``model`` ('' if pruned away); timm's feature wrappers flatten
    ``stages.0`` to ``stages_0``, and timm's Twins lists its stages as ``block.i`` for modules named
    ``blocks.i`` (unresolved, its input would not be padded and odd sizes would give floor(H / s) maps)."""
    for candidate in (name, name.replace(".", "_"), name.replace("block.", "blocks.", 1)):
        try:
            model.get_submodule(candidate)
            return candidate
        except AttributeError:
            continue
    return ""
