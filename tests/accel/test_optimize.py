"""The one switch: ``optimize`` / ``restore`` swap classes and nothing else; ``init_model`` optimizes CPU models by
default; a CPU training recipe with ``accel = True`` trains on the fast paths and one without does not."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers.demo import tiny_demo_config
from mmengine.config import Config
from tiny_train import make_tiny_data

from densekit import accel
from densekit.accel import SWAPS, fused_linear, is_optimized, optimize, register, restore
from densekit.accel.swin import FastPatchEmbed
from densekit.engine.demo import DEMO_CONFIG
from densekit.engine.runner import train
from densekit.inference.api import init_model
from densekit.layers.window_attention import WindowAttention
from densekit.models import SwinUnet
from densekit.models.builder import build_model


def _segmentor() -> torch.nn.Module:
    """The demo recipe's UPerNet + Swin-T (random init): Swin layers and ConvModules."""
    torch.manual_seed(0)
    return build_model(Config.fromfile(str(DEMO_CONFIG)), pretrained=False).eval()


def _swin_unet() -> SwinUnet:
    torch.manual_seed(0)
    return SwinUnet(backbone=dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), in_chans=1),
                    decode_head=dict(num_classes=3)).eval()


@pytest.mark.parametrize("build", [_segmentor, _swin_unet], ids=["upernet_swin", "swin_unet"])
def test_optimize_then_restore_round_trips(build):
    model = build()
    plain_types = [type(m) for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, model.backbone.in_chans, 64, 96)
    with torch.no_grad():
        expected = model(x, mode="tensor")

    assert optimize(model, enabled=False) is model and not is_optimized(model)
    assert optimize(model) is model and is_optimized(model)
    swapped = [type(m) for m in model.modules()]
    assert all(SWAPS.get(before, before) is after for before, after in zip(plain_types, swapped))
    assert set(SWAPS) & set(plain_types) and set(SWAPS.values()) & set(swapped)  # something was swapped
    assert list(model.state_dict()) == list(state)  # same keys, same order: checkpoints load either way
    with torch.no_grad():
        fast = model(x, mode="tensor")
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-4)

    assert restore(model) is model and not is_optimized(model)
    assert [type(m) for m in model.modules()] == plain_types
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x, mode="tensor"), expected)  # the plain path again, bit for bit


def test_optimized_model_copies_and_pickles():
    model = optimize(_swin_unet())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        expected = model(x)  # packs weights and caches masks, kept off the modules
        copied = copy.deepcopy(model)
    assert is_optimized(copied)
    with torch.no_grad():
        torch.testing.assert_close(copied(x), expected)


def test_register_refuses_a_second_subclass_of_one_network_class():
    with pytest.raises(KeyError, match="WindowAttention already has an accelerated subclass"):
        @register
        class Other(WindowAttention):
            pass


@pytest.mark.parametrize(("accel_arg", "expected"), [(None, True), (False, False), (True, True)])
def test_init_model_optimizes_cpu_models_by_default(accel_arg, expected):
    model = init_model(str(DEMO_CONFIG), device="cpu", accel=accel_arg)
    assert is_optimized(model) is expected


def _demo_run(root, work_dir, accel_key: bool | None) -> Config:
    cfg = tiny_demo_config(root, num_train=8, work_dir=work_dir)
    cfg.val_dataloader.batch_size = cfg.test_dataloader.batch_size = 1
    cfg.log_level = "WARNING"
    if accel_key is None:
        cfg.pop("accel")
    else:
        cfg.accel = accel_key
    return cfg


@pytest.mark.parametrize("accel_key", [True, None], ids=["accel", "no_accel"])
def test_demo_recipe_trains_on_accel_only_when_asked(tmp_path, monkeypatch, accel_key):
    """The demo recipe (``accel = True``): the unfolded patch GEMM runs in the training steps, the fused paths in
    validation, and validation's packed weights are dropped before training resumes. Without the key: none."""
    assert Config.fromfile(str(DEMO_CONFIG)).get("accel") is True
    root = make_tiny_data(tmp_path / "data")
    training_calls, packed_at_val_end = [], []
    real_project, real_clear = FastPatchEmbed.project, accel.clear_caches
    monkeypatch.setattr(FastPatchEmbed, "project",
                        lambda self, x: training_calls.append(torch.is_grad_enabled()) or real_project(self, x))

    def clear_caches() -> None:
        packed_at_val_end.append(len(fused_linear._PACKED))
        real_clear()

    monkeypatch.setattr(accel, "clear_caches", clear_caches)
    runner = train(_demo_run(root, tmp_path / "work", accel_key))
    model = runner.model
    if accel_key:
        assert is_optimized(model)
        assert True in training_calls and False in training_calls  # training steps and validation
        assert packed_at_val_end and (packed_at_val_end[0] > 0 or not fused_linear.fused_ops_work(torch.float32))
        assert not any(m in fused_linear._PACKED for m in model.modules())
    else:
        assert not is_optimized(model) and training_calls == [] and packed_at_val_end == []
