"""Layer-wise learning-rate decay in mmsegmentation's vocabulary, as mmengine optimizer-wrapper constructors.

``LearningRateDecayOptimizerConstructor`` (ConvNeXt: ``decay_type='stage_wise' | 'layer_wise'``, ``decay_rate``,
``num_layers``) and ``LayerDecayOptimizerConstructor`` (ViT/MAE/BEiT: ``num_layers``, ``layer_decay_rate``) give
every parameter the learning rate and weight decay of mmsegmentation's rules
(``mmseg/engine/optimizers/layer_decay_optimizer_constructor.py``): a layer id per parameter name, and

    lr = base_lr * decay_rate ** (num_layers + 2 - layer_id - 1)

mmengine has no such constructor and mmseg cannot be imported without a compiled mmcv (DESIGN.md §2), so the
rules are written here. mmseg reads its own parameter names (``backbone.downsample_layers.i``,
``backbone.stages.i.j``, ``backbone.layers.i``); densekit's backbones wrap timm, so each densekit name is first
mapped to mmseg's by an explicit table (``mmseg_param_name``), and a backbone parameter the table does not know
is refused by name rather than guessed.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from ..registry import mmengine_child

OPTIM_WRAPPER_CONSTRUCTORS = mmengine_child("OPTIM_WRAPPER_CONSTRUCTORS")

_KEYS = ("num_layers", "decay_rate", "decay_type")  # LearningRateDecayOptimizerConstructor's paramwise_cfg
_DECAY_TYPES = ("layer_wise", "stage_wise", "layer_wise_vit")
_TOKENS = ("cls_token", "mask_token", "pos_embed")  # mmseg's layer-0 parameters


# ---- densekit names -> mmseg names -------------------------------------------------------------------------

# timm ConvNeXt inside TimmBackbone (``backbone.model.*``) -> mmpretrain's ConvNeXt that mmseg's rules read.
_CONVNEXT_RULES: list[tuple[str, str]] = [
    (r"model\.stem\.(.+)", r"downsample_layers.0.\1"),
    (r"model\.stages\.([0-3])\.downsample\.(.+)", r"downsample_layers.\1.\2"),
    (r"model\.stages\.([0-3])\.blocks\.(\d+)\.(.+)", r"stages.\1.\2.\3"),
    (r"out_norms\.([0-3])\.(.+)", r"norm\1.\2"),  # mmseg's per-stage output norms
]
# A timm VisionTransformer inside a densekit backbone (``backbone.<wrapper>.*``, e.g. ``model.``) -> mmseg's ViT.
_VIT_RULES: list[tuple[str, str]] = [
    (r"(?:\w+\.)?(cls_token|mask_token|pos_embed)", r"\1"),
    (r"(?:\w+\.)?(reg_token|register_tokens)", r"cls_token"),  # extra tokens: layer 0 as the class token
    (r"(?:\w+\.)?patch_embed\.(.+)", r"patch_embed.\1"),
    (r"(?:\w+\.)?blocks\.(\d+)\.(.+)", r"layers.\1.\2"),
    (r"(?:\w+\.)?(norm_pre|norm|fc_norm)\.(.+)", r"\1.\2"),  # mmseg's pre_ln / ln1: the top group
    (r"out_norms\.(\d+)\.(.+)", r"out_norm\1.\2"),
]


def backbone_family(backbone: nn.Module) -> str:
    """``'convnext'`` or ``'vit'``: which of mmseg's rule sets applies, as mmseg picks by the backbone's class
    (ConvNeXt / BEiT, MAE). densekit backbones wrap timm, so the timm model inside decides."""
    names = {type(m).__name__ for m in backbone.modules()}
    if "ConvNeXt" in names:
        return "convnext"
    if names & {"VisionTransformer", "Eva", "Beit"} or any(("ViT" in n or "MAE" in n) for n in names):
        return "vit"
    raise ValueError(f"layer-wise lr decay: no mmsegmentation rule for backbone {type(backbone).__name__} "
                     "(supported: ConvNeXt, ViT/MAE/BEiT)")


def mmseg_param_name(name: str, family: str) -> str:
    """The mmseg name of the model parameter ``name`` (``backbone.model.stages.2.blocks.4.conv_dw.weight`` ->
    ``backbone.stages.2.4.conv_dw.weight``). Parameters outside the backbone keep their names (mmseg gives them
    the top group); a backbone parameter no rule recognises raises ValueError naming it."""
    if not name.startswith("backbone."):
        return name
    inner = name[len("backbone."):]
    for pattern, target in _CONVNEXT_RULES if family == "convnext" else _VIT_RULES:
        if re.fullmatch(pattern, inner):
            return "backbone." + re.sub(pattern, target, inner)
    raise ValueError(f"layer-wise lr decay: backbone parameter {name!r} is not in mmsegmentation's {family} "
                     "layout rules; the lr group of an unknown parameter is not guessed")


# ---- mmseg's rules, over mmseg names ----------------------------------------------------------------------

def layer_id_for_convnext(name: str, max_layer_id: int) -> int:
    """mmseg's ``get_layer_id_for_convnext``: stem 0, stage 0 blocks 1, stage 1 2, stage 2 ``3 + block // 3``,
    stage 3 ``max_layer_id``; everything else (heads, output norms) ``max_layer_id + 1``."""
    if name in tuple(f"backbone.{t}" for t in _TOKENS):
        return 0
    parts = name.split(".")
    if name.startswith("backbone.downsample_layers"):
        return {0: 0, 1: 2, 2: 3, 3: max_layer_id}[int(parts[2])]
    if name.startswith("backbone.stages"):
        stage, block = int(parts[2]), int(parts[3])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: max_layer_id}[stage]
    return max_layer_id + 1


def stage_id_for_convnext(name: str, max_stage_id: int) -> int:
    """mmseg's ``get_stage_id_for_convnext``: tokens and downsamples 0, stage i ``i + 1``, else ``max - 1``."""
    if name in tuple(f"backbone.{t}" for t in _TOKENS) or name.startswith("backbone.downsample_layers"):
        return 0
    if name.startswith("backbone.stages"):
        return int(name.split(".")[2]) + 1
    return max_stage_id - 1


def layer_id_for_vit(name: str, max_layer_id: int) -> int:
    """mmseg's ``get_layer_id_for_vit``: tokens and patch embedding 0, block i ``i + 1``, else ``max - 1``."""
    if name in tuple(f"backbone.{t}" for t in _TOKENS) or name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.layers"):
        return int(name.split(".")[2]) + 1
    return max_layer_id - 1


def _id_rule(decay_type: str, family: str, num_layers: int) -> Callable[[str], int]:
    """mmseg's choice: 'layer_wise*' by backbone family, 'stage_wise' for ConvNeXt only."""
    if "layer_wise" in decay_type and family == "convnext":
        return lambda name: layer_id_for_convnext(name, num_layers)
    if "layer_wise" in decay_type:
        return lambda name: layer_id_for_vit(name, num_layers + 2)
    if family == "convnext":
        return lambda name: stage_id_for_convnext(name, num_layers + 2)
    raise ValueError("layer-wise lr decay: decay_type 'stage_wise' is ConvNeXt's only (mmsegmentation's rule); "
                     "use 'layer_wise' for a ViT")


# ---- the constructors --------------------------------------------------------------------------------------

@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LearningRateDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """mmseg's constructor of that name. ``paramwise_cfg``: ``num_layers`` (int), ``decay_rate`` (float),
    ``decay_type`` (``'layer_wise'`` default, ``'stage_wise'``); any other key is refused by name, since the
    rules replace DefaultOptimWrapperConstructor's multipliers rather than combine with them."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = LearningRateDecayOptimizerConstructor.check_paramwise_cfg(dict(paramwise_cfg or {}))
        # The parent validates its own paramwise keys (ours are not among them), so it gets none; setting
        # paramwise_cfg afterwards makes its __call__ go through add_params.
        super().__init__(optim_wrapper_cfg, None)
        self.paramwise_cfg = self.decay_cfg = paramwise_cfg

    @staticmethod
    def check_paramwise_cfg(paramwise_cfg: dict) -> dict:
        """``paramwise_cfg`` with ``decay_type`` defaulted; ValueError naming any key or value it cannot honour
        (the config check calls this before a run)."""
        paramwise_cfg = dict(paramwise_cfg)
        unknown = sorted(set(paramwise_cfg) - set(_KEYS))
        if unknown:
            raise ValueError(f"LearningRateDecayOptimizerConstructor: paramwise_cfg keys {unknown} are not read "
                             f"(it takes {list(_KEYS)})")
        for key in ("num_layers", "decay_rate"):
            if key not in paramwise_cfg:
                raise ValueError(f"LearningRateDecayOptimizerConstructor: paramwise_cfg needs {key!r}")
        decay_type = paramwise_cfg.setdefault("decay_type", "layer_wise")
        if decay_type not in _DECAY_TYPES:
            raise ValueError(f"LearningRateDecayOptimizerConstructor: decay_type {decay_type!r} is not one of "
                             f"{list(_DECAY_TYPES)}")
        return paramwise_cfg

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        """Append one group per (layer id, decay / no decay) to ``params``, as mmseg does: 1-D parameters and
        ``.bias`` get weight decay 0 (mmseg also lists bare ``pos_embed`` / ``cls_token``, which never match
        a model's full ``backbone.``-prefixed names, so they keep the weight decay there and here)."""
        num_layers = int(self.decay_cfg["num_layers"]) + 2
        rate = float(self.decay_cfg["decay_rate"])
        family = backbone_family(module.backbone)
        layer_id = _id_rule(self.decay_cfg["decay_type"], family, int(self.decay_cfg["num_layers"]))
        groups: dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue  # frozen weights
            no_decay = param.ndim == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
            lid = layer_id(mmseg_param_name(name, family))
            key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
            if key not in groups:
                scale = rate ** (num_layers - lid - 1)
                groups[key] = {"weight_decay": 0.0 if no_decay else self.base_wd, "params": [], "param_names": [],
                               "lr_scale": scale, "group_name": key, "lr": scale * self.base_lr}
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        summary = ", ".join(f"{k}: {len(g['params'])} x lr {g['lr']:.3g}" for k, g in groups.items())
        print_log(f"layer-wise lr decay ({self.decay_cfg['decay_type']}, {family}, rate {rate}): {summary}",
                  logger="current")
        params.extend(groups.values())


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(LearningRateDecayOptimizerConstructor):
    """mmseg's BEiT/MAE constructor: ``paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65)``, i.e.
    ``LearningRateDecayOptimizerConstructor`` with ``decay_type='layer_wise_vit'`` and ``decay_rate``."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        super().__init__(optim_wrapper_cfg, self.check_paramwise_cfg(dict(paramwise_cfg or {})))

    @staticmethod
    def check_paramwise_cfg(paramwise_cfg: dict) -> dict:
        """The general constructor's ``paramwise_cfg`` for this one's (``layer_decay_rate`` -> ``decay_rate``,
        ``decay_type='layer_wise_vit'`` as mmseg overrides whatever was given); ValueError naming a bad key."""
        paramwise_cfg = dict(paramwise_cfg)
        unknown = sorted(set(paramwise_cfg) - {"num_layers", "layer_decay_rate", "decay_type"})
        if unknown:
            raise ValueError(f"LayerDecayOptimizerConstructor: paramwise_cfg keys {unknown} are not read "
                             f"(it takes num_layers, layer_decay_rate)")
        if "layer_decay_rate" not in paramwise_cfg:
            raise ValueError("LayerDecayOptimizerConstructor: paramwise_cfg needs 'layer_decay_rate'")
        paramwise_cfg["decay_rate"] = paramwise_cfg.pop("layer_decay_rate")
        paramwise_cfg["decay_type"] = "layer_wise_vit"
        return LearningRateDecayOptimizerConstructor.check_paramwise_cfg(paramwise_cfg)
