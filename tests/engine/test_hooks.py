"""NonFiniteLossHook: the first NaN loss stops training, names iteration and term, keeps the last good checkpoint."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers.toy_runs import nan_loss_config
from torch import nn

from densekit.accel import fused_linear, is_optimized
from densekit.apis import build_runner, train
from densekit.engine.config_check import ConfigError
from densekit.engine.hooks import AccelHook, NonFiniteLossError
from densekit.layers.conv import ConvModule


def test_build_runner_adds_the_hook_once(tmp_path):
    runner = build_runner(nan_loss_config(nan_at=100), work_dir=str(tmp_path))
    names = [type(h).__name__ for h in runner.hooks]
    assert names.count("NonFiniteLossHook") == 1
    assert names.index("NonFiniteLossHook") < names.index("CheckpointHook")  # checks before anything is saved


def test_cpu_training_logs_show_resident_memory(tmp_path):
    runner = train(nan_loss_config(nan_at=100), work_dir=str(tmp_path))
    if torch.cuda.is_available():
        pytest.skip("CpuMemoryHook is added to runs without CUDA")
    rss = runner.message_hub.get_scalar("train/rss_mb").current()
    assert 50 < rss < 64 * 1024  # MiB: a Python process with torch loaded, far from absurd
    _, line = runner.log_processor.get_log_after_iter(runner, runner.iter - 1, "train")  # LoggerHook's line
    assert "rss_mb: " in line


@pytest.mark.skipif(not fused_linear.fused_ops_work(torch.float32), reason="no working oneDNN linear ops")
def test_accel_hook_drops_validation_packed_weights():
    layer = nn.Linear(8, 4)
    with torch.no_grad():  # CPU inference, as in validation: the weight gets packed
        fused_linear.linear(torch.randn(2, 8), layer)
    assert layer in fused_linear._PACKED
    AccelHook().after_val_epoch(runner=None, metrics={})
    assert layer not in fused_linear._PACKED


def test_accel_hook_optimizes_the_unwrapped_model_before_the_run():
    model = ConvModule(4, 4, 3, padding=1)
    AccelHook().before_run(SimpleNamespace(model=model))
    assert is_optimized(model)


@pytest.mark.parametrize(("key", "argument", "added"), [(None, None, False), (True, None, True), (False, None, False),
                                                         (True, False, False), (None, True, True)])
def test_build_runner_adds_the_accel_hook_when_asked(tmp_path, key, argument, added):
    cfg = nan_loss_config(nan_at=100)
    if key is not None:
        cfg.accel = key
    runner = build_runner(cfg, work_dir=str(tmp_path), accel=argument)
    assert ("AccelHook" in [type(h).__name__ for h in runner.hooks]) is added


def test_runners_built_in_one_second_keep_their_own_log_folders(tmp_path):
    """mmengine hands a Runner the logger and visualizer of an earlier Runner started in the same second (their
    names are the second): three toy runners, each built in well under a second, must each log into their own
    work dir."""
    runners = [build_runner(nan_loss_config(nan_at=100), work_dir=str(tmp_path / f"run{i}")) for i in range(3)]
    assert len({runner.timestamp for runner in runners}) == 3
    for i, runner in enumerate(runners):
        own = str(tmp_path / f"run{i}")
        assert runner.log_dir.startswith(own) and runner.logger.log_file.startswith(own)
        assert runner.visualizer._vis_backends["LocalVisBackend"]._save_dir.startswith(own)


def test_accel_key_must_be_a_bool(tmp_path):
    cfg = nan_loss_config(nan_at=100)
    cfg.accel = "yes"
    with pytest.raises(ConfigError, match="'accel' must be True or False, got 'yes'"):
        build_runner(cfg, work_dir=str(tmp_path))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"iteration 5: loss_ce=nan\. .*last good checkpoint is "
                                                 r".*iter_4\.pth"):
        train(nan_loss_config(nan_at=5), work_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_2.pth", "iter_4.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip().endswith("iter_4.pth")
    state = torch.load(tmp_path / "iter_4.pth", map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
