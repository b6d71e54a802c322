"""Every config in configs/ loads with mmengine, builds its model, and feeds its heads the channels they expect."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from densekit.registry import MODELS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
# Recipes that reproduce an mmseg model-zoo entry say so and quote its published result.
MMSEG_RECIPES = {"upernet_swin_t_ade", "upernet_swin_s_ade", "upernet_swin_b_ade", "upernet_convnext_t_ade",
                 "upernet_r50_ade", "upernet_vit_b_mln_ade", "upernet_mae_vit_b_ade"}


def _level_channels(model) -> list[int]:
    return [model.neck.out_channels] * model.neck.num_outs if model.neck is not None else model.backbone.out_channels


def test_the_configs_are_there():
    names = {p.stem for p in CONFIGS}
    assert MMSEG_RECIPES | {"upernet_regnety_040_ade", "upernet_swin_t_demo"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_model(path: Path):
    cfg = Config.fromfile(str(path))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "a config starts with a comment naming its recipe"
    if path.stem in MMSEG_RECIPES:
        assert "Published by mmsegmentation" in text and "not reproduced" in text
    bases = cfg.get("_base_", None) or []
    for base in ([bases] if isinstance(bases, str) else bases):  # at most one level of _base_
        assert "_base_" not in Config.fromfile(str(path.parent / base)), f"{base} has a _base_ itself"
    for key in ("model", "train_dataloader", "val_dataloader", "optim_wrapper", "param_scheduler", "train_cfg"):
        assert key in cfg, key
    init_default_scope(cfg.get("default_scope", "densekit"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SyncBN.*")  # one process: SyncBN -> BN, with a warning
        model = MODELS.build(cfg.model)
    head = cfg.model.get("decode_head")
    if head is None or not hasattr(model, "backbone"):  # not a segmentor: building it checked its channels
        return
    channels = _level_channels(model)
    assert list(head.in_channels) == channels
    aux = cfg.model.get("auxiliary_head")
    if aux is not None:
        assert aux.in_channels == channels[aux.in_index]
    assert model.num_classes == head.num_classes
