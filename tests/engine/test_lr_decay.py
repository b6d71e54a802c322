"""Layer-wise lr decay constructors give every parameter mmsegmentation's lr and weight decay.

The expected values are mmseg's rules (mmseg/engine/optimizers/layer_decay_optimizer_constructor.py) written
here over densekit's parameter names, parameter by parameter, independent of densekit's name tables:
lr = base_lr * rate ** (num_layers + 2 - layer_id - 1); weight decay 0 for 1-D parameters and ``.bias``.
"""
from __future__ import annotations

import re

import pytest
import timm
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

import densekit
from densekit.engine.optim import mmseg_param_name

BASE_LR, BASE_WD = 1e-4, 0.05


class _Segmentor(nn.Module):
    """What the constructors read: a ``backbone`` and some head parameters beside it."""

    def __init__(self, backbone: nn.Module, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Sequential(nn.Conv2d(channels, 8, 1), nn.BatchNorm2d(8))


class _TimmViT(nn.Module):
    """A timm ViT under TimmBackbone-like names (``backbone.model.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)


def _groups(model: nn.Module, paramwise_cfg: dict, constructor: str) -> dict[str, tuple[float, float]]:
    init_default_scope("densekit")
    wrapper = build_optim_wrapper(model, dict(
        type="OptimWrapper", constructor=constructor, paramwise_cfg=paramwise_cfg,
        optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=BASE_WD)))
    by_id = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            out[by_id[id(p)]] = (group["lr"], group["weight_decay"])
    return out


def _expected_wd(name: str, param: torch.Tensor) -> float:
    # mmseg: `len(param.shape) == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')`; the
    # last test compares bare names against full ones, so pos_embed / cls_token keep their weight decay.
    return 0.0 if param.ndim == 1 or name.endswith(".bias") else BASE_WD


def _vit_layer(name: str) -> int:
    """mmseg get_layer_id_for_vit(name, 12 + 2) over densekit names."""
    if name in ("backbone.model.cls_token", "backbone.model.pos_embed") or \
            name.startswith("backbone.model.patch_embed"):
        return 0
    m = re.match(r"backbone\.model\.blocks\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else 13


def test_vit_b_layer_decay_parameter_by_parameter():
    model = _Segmentor(_TimmViT(), 768)
    got = _groups(model, dict(num_layers=12, layer_decay_rate=0.65), "LayerDecayOptimizerConstructor")
    params = dict(model.named_parameters())
    assert set(got) == set(params)
    for name, param in params.items():
        lr = BASE_LR * 0.65 ** (12 + 2 - _vit_layer(name) - 1)
        assert got[name][0] == pytest.approx(lr, rel=1e-12), name
        assert got[name][1] == _expected_wd(name, param), name
    # spot checks of the rule itself
    assert got["backbone.model.blocks.11.mlp.fc2.weight"] == (pytest.approx(BASE_LR * 0.65), BASE_WD)
    assert got["backbone.model.blocks.0.norm1.weight"] == (pytest.approx(BASE_LR * 0.65 ** 12), 0.0)
    assert got["backbone.model.pos_embed"][0] == pytest.approx(BASE_LR * 0.65 ** 13)
    assert got["decode_head.0.weight"] == (pytest.approx(BASE_LR), BASE_WD)


def test_vit_layer_wise_through_the_general_constructor():
    # mmseg: LearningRateDecayOptimizerConstructor with decay_type='layer_wise' on a ViT uses the ViT rule.
    model = _Segmentor(_TimmViT(), 768)
    got = _groups(model, dict(num_layers=12, decay_rate=0.65, decay_type="layer_wise"),
                  "LearningRateDecayOptimizerConstructor")
    for name, _ in model.named_parameters():
        assert got[name][0] == pytest.approx(BASE_LR * 0.65 ** (12 + 2 - _vit_layer(name) - 1), rel=1e-12), name


def _convnext_stage(name: str) -> int:
    """mmseg get_stage_id_for_convnext(name, 6 + 2) over densekit's TimmBackbone names."""
    if name.startswith("backbone.model.stem") or re.match(r"backbone\.model\.stages\.\d\.downsample", name):
        return 0
    m = re.match(r"backbone\.model\.stages\.(\d)\.blocks\.", name)
    return int(m.group(1)) + 1 if m else 7


def _convnext_layer(name: str, num_layers: int) -> int:
    """mmseg get_layer_id_for_convnext(name, num_layers) over densekit's TimmBackbone names."""
    if name.startswith("backbone.model.stem"):
        return 0
    m = re.match(r"backbone\.model\.stages\.(\d)\.downsample", name)
    if m:
        return {1: 2, 2: 3, 3: num_layers}[int(m.group(1))]
    m = re.match(r"backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.", name)
    if m:
        stage, block = int(m.group(1)), int(m.group(2))
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: num_layers}[stage]
    return num_layers + 1


@pytest.fixture(scope="module")
def convnext_t() -> nn.Module:
    return _Segmentor(densekit.create_backbone("convnext_tiny", out_norm=True), 768)


def test_convnext_t_stage_wise_parameter_by_parameter(convnext_t):
    got = _groups(convnext_t, dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6),
                  "LearningRateDecayOptimizerConstructor")
    params = dict(convnext_t.named_parameters())
    assert set(got) == set(params)
    for name, param in params.items():
        assert got[name][0] == pytest.approx(BASE_LR * 0.9 ** (6 + 2 - _convnext_stage(name) - 1), rel=1e-12), name
        assert got[name][1] == _expected_wd(name, param), name
    assert got["backbone.model.stem.0.weight"][0] == pytest.approx(BASE_LR * 0.9 ** 7)
    assert got["backbone.model.stages.3.blocks.2.mlp.fc1.weight"] == (pytest.approx(BASE_LR * 0.9 ** 3), BASE_WD)
    assert got["backbone.out_norms.3.weight"] == (pytest.approx(BASE_LR), 0.0)
    assert got["backbone.model.stages.0.blocks.0.gamma"][1] == 0.0  # 1-D layer scale


def test_convnext_t_layer_wise_parameter_by_parameter(convnext_t):
    got = _groups(convnext_t, dict(decay_rate=0.9, decay_type="layer_wise", num_layers=12),
                  "LearningRateDecayOptimizerConstructor")
    for name, param in convnext_t.named_parameters():
        lr = BASE_LR * 0.9 ** (12 + 2 - _convnext_layer(name, 12) - 1)
        assert got[name][0] == pytest.approx(lr, rel=1e-12), name
        assert got[name][1] == _expected_wd(name, param), name
    assert got["backbone.model.stages.2.blocks.8.conv_dw.weight"][0] == pytest.approx(BASE_LR * 0.9 ** 8)


def test_frozen_parameters_are_left_out():
    model = _Segmentor(densekit.create_backbone("convnext_tiny", frozen_stages=1), 768)
    got = _groups(model, dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6),
                  "LearningRateDecayOptimizerConstructor")
    assert not any(n.startswith("backbone.model.stem") or n.startswith("backbone.model.stages.0.") for n in got)
    assert "backbone.model.stages.1.blocks.0.gamma" in got


def test_names_are_mapped_to_mmsegs():
    assert mmseg_param_name("backbone.model.stages.2.blocks.4.conv_dw.weight", "convnext") == \
        "backbone.stages.2.4.conv_dw.weight"
    assert mmseg_param_name("backbone.model.stages.1.downsample.1.weight", "convnext") == \
        "backbone.downsample_layers.1.1.weight"
    assert mmseg_param_name("backbone.model.blocks.3.attn.qkv.weight", "vit") == "backbone.layers.3.attn.qkv.weight"
    assert mmseg_param_name("decode_head.conv_seg.weight", "vit") == "decode_head.conv_seg.weight"


def test_unknown_names_and_keys_are_refused():
    model = _Segmentor(densekit.create_backbone("convnext_tiny"), 768)
    model.backbone.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="backbone.extra.weight"):
        _groups(model, dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6),
                "LearningRateDecayOptimizerConstructor")
    with pytest.raises(ValueError, match="norm_decay_mult"):
        _groups(model, dict(decay_rate=0.9, num_layers=6, norm_decay_mult=0.0), "LearningRateDecayOptimizerConstructor")
    with pytest.raises(ValueError, match="stage_wise"):
        _groups(_Segmentor(_TimmViT(), 768), dict(decay_rate=0.9, decay_type="stage_wise", num_layers=12),
                "LearningRateDecayOptimizerConstructor")
    resnet = _Segmentor(densekit.create_backbone("resnet18"), 512)
    with pytest.raises(ValueError, match="no mmsegmentation rule"):
        _groups(resnet, dict(decay_rate=0.9, num_layers=6), "LearningRateDecayOptimizerConstructor")


def test_convnext_config_builds_mmsegs_lr_decay():
    from pathlib import Path

    from mmengine.config import Config

    from densekit.engine.config_check import check_config
    from densekit.registry import MODELS

    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / "configs" / "upernet_convnext_t_ade.py"))
    check_config(cfg)
    assert cfg.optim_wrapper.constructor == "LearningRateDecayOptimizerConstructor"
    assert dict(cfg.optim_wrapper.paramwise_cfg) == dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6)
    init_default_scope("densekit")
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = {n: g["lr"] for g in wrapper.optimizer.param_groups for n in g["param_names"]}
    assert lr["backbone.model.stem.0.weight"] == pytest.approx(1e-4 * 0.9 ** 7)
    assert lr["backbone.model.stages.2.blocks.0.mlp.fc1.weight"] == pytest.approx(1e-4 * 0.9 ** 4)
    assert lr["decode_head.conv_seg.weight"] == pytest.approx(1e-4)


def test_config_check_refuses_bad_paramwise_keys_by_name():
    from densekit.engine.config_check import ConfigError, check_config

    for constructor, paramwise in (("LearningRateDecayOptimizerConstructor", dict(decay_rate=0.9, num_layers=6,
                                                                                   custom_keys={})),
                                   ("LayerDecayOptimizerConstructor", dict(num_layers=12, decay_rate=0.65))):
        cfg = dict(optim_wrapper=dict(type="OptimWrapper", constructor=constructor, paramwise_cfg=paramwise,
                                      optimizer=dict(type="AdamW", lr=1e-4)))
        with pytest.raises(ConfigError, match=r"optim_wrapper\.paramwise_cfg.*(custom_keys|decay_rate)"):
            check_config(cfg)


def test_mae_config_builds_mmsegs_layer_decay_parameter_by_parameter():
    # mmseg's mae-base_upernet recipe: LayerDecayOptimizerConstructor, num_layers 12, layer_decay_rate 0.65, on
    # the real config's model (ViTBackbone: timm's ViT under backbone.model., Feature2Pyramid, UPerNet heads).
    from pathlib import Path

    from mmengine.config import Config

    from densekit.engine.config_check import check_config
    from densekit.registry import MODELS

    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / "configs" / "upernet_mae_vit_b_ade.py"))
    check_config(cfg)
    assert cfg.optim_wrapper.constructor == "LayerDecayOptimizerConstructor"
    assert dict(cfg.optim_wrapper.paramwise_cfg) == dict(num_layers=12, layer_decay_rate=0.65)
    assert (cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay) == (BASE_LR, BASE_WD)
    init_default_scope("densekit")
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    got = {n: (g["lr"], g["weight_decay"]) for g in wrapper.optimizer.param_groups for n in g["param_names"]}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == set(params)
    for name, param in params.items():
        assert got[name][0] == pytest.approx(BASE_LR * 0.65 ** (12 + 2 - _vit_layer(name) - 1), rel=1e-12), name
        assert got[name][1] == _expected_wd(name, param), name
    assert got["backbone.model.blocks.0.attn.qkv.weight"] == (pytest.approx(BASE_LR * 0.65 ** 12), BASE_WD)
    assert got["backbone.model.patch_embed.proj.weight"] == (pytest.approx(BASE_LR * 0.65 ** 13), BASE_WD)
    assert got["backbone.model.pos_embed"] == (pytest.approx(BASE_LR * 0.65 ** 13), BASE_WD)
    assert got["neck.upsample_4x.0.weight"][0] == pytest.approx(BASE_LR)
    assert got["decode_head.conv_seg.bias"] == (pytest.approx(BASE_LR), 0.0)
