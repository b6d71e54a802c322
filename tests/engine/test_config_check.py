"""Misspelt config keys are named with the nearest valid key, before anything is built."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor

from densekit.apis import load_config
from densekit.engine.config_check import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "upernet_swin_t_demo.py")
RPN = str(ROOT / "configs" / "rpn_r50_fpn_1x_coco.py")  # SGD, epoch-based


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.py")))
def test_every_shipped_config_passes(config):
    assert load_config(str(ROOT / "configs" / config)).model


@pytest.mark.parametrize("option, message", [
    ({"model.decode_haed": {}}, r"config key model\.decode_haed: EncoderDecoder has no argument 'decode_haed'; "
                                r"did you mean 'decode_head'\?"),
    ({"train_dataloader.batch_sise": 4}, r"train_dataloader\.batch_sise: .*did you mean 'batch_size'\?"),
    ({"model.backbone.window_sise": 7}, r"model\.backbone\.window_sise: swin_t .*did you mean 'window_size'\?"),
    ({"model.decode_head.chanels": 8}, r"model\.decode_head\.chanels: UPerHead .*did you mean 'channels'\?"),
    ({"val_dataloader.dataset.img_dri": "x"}, r"val_dataloader\.dataset\.img_dri: DemoDataset .*'img_dir'"),
    ({"train_dataloader.dataset.pipeline": [dict(type="RandomCrop", crop_sise=8)]},
     r"train_dataloader\.dataset\.pipeline\[0\]\.crop_sise: RandomCrop .*'crop_size'"),
])
def test_misspelt_nested_keys_name_the_nearest_valid_one(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, option)


def test_misspelt_top_level_key(tmp_path):
    text = (ROOT / "configs" / "upernet_swin_t_demo.py").read_text().replace("param_scheduler =", "param_schedular =")
    config = tmp_path / "typo.py"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"'param_schedular' .*did you mean 'param_scheduler'\?"):
        load_config(str(config))
    config.write_text(text.replace("param_schedular =", "my_helper_value ="))  # helper variables are fine
    assert load_config(str(config)).my_helper_value


# Every family of the config outside the model, each with a typo: the dotted key and the nearest valid name.
@pytest.mark.parametrize("config, option, message", [
    (DEMO, {"train_cfg.max_iter": 40},
     r"^config key train_cfg\.max_iter: IterBasedTrainLoop has no argument 'max_iter'; did you mean 'max_iters'\? "
     r"\(valid: dynamic_intervals, max_iters, val_begin, val_interval\)$"),
    (RPN, {"train_cfg.max_epoch": 2}, r"train_cfg\.max_epoch: EpochBasedTrainLoop .*'max_epochs'"),
    (DEMO, {"train_cfg": dict(_delete_=True, by_epoch=True, max_epochs=2, val_intervl=1)},  # by_epoch picks
     r"train_cfg\.val_intervl: EpochBasedTrainLoop .*'val_interval'\? \(valid: by_epoch, "),
    (DEMO, {"val_cfg.fp61": True}, r"val_cfg\.fp61: ValLoop .*'fp16'"),
    (DEMO, {"test_cfg.fp61": True}, r"test_cfg\.fp61: TestLoop .*'fp16'"),
    # CheckpointHook takes **kwargs and passes them to Runner.save_checkpoint, which takes none of its own.
    (DEMO, {"default_hooks.checkpoint.intreval": 5},
     r"default_hooks\.checkpoint\.intreval: SafeCheckpointHook has no argument 'intreval'; did you mean 'interval'"),
    (DEMO, {"default_hooks.logger.intervl": 5}, r"default_hooks\.logger\.intervl: LoggerHook .*'interval'"),
    (DEMO, {"default_hooks.checkpiont.interval": 5},
     r"default_hooks\.checkpiont is not one of mmengine's default hooks; did you mean 'checkpoint'"),
    (DEMO, {"custom_hooks": [dict(type="SegOverlayHook", out_dir="o", alpah=0.5)]},
     r"custom_hooks\[0\]\.alpah: SegOverlayHook .*'alpha'"),
    # EMAHook's **kwargs go to its ema_type model (ExponentialMovingAverage).
    (DEMO, {"custom_hooks": [dict(type="EMAHook", momentm=0.1)]}, r"custom_hooks\[0\]\.momentm: EMAHook .*'momentum'"),
    (RPN, {"optim_wrapper.optimizer.momentun": 0.9}, r"optim_wrapper\.optimizer\.momentun: SGD .*'momentum'"),
    (DEMO, {"optim_wrapper.accumulative_count": 2},
     r"optim_wrapper\.accumulative_count: OptimWrapper .*'accumulative_counts'"),
    # AmpOptimWrapper's **kwargs go to OptimWrapper.
    (DEMO, {"optim_wrapper.type": "AmpOptimWrapper", "optim_wrapper.accumulative_count": 2},
     r"optim_wrapper\.accumulative_count: AmpOptimWrapper .*'accumulative_counts'"),
    (DEMO, {"optim_wrapper.clip_grad.max_nrom": 1.0},
     r"optim_wrapper\.clip_grad\.max_nrom: clip_grad_norm_ .*'max_norm'"),
    (DEMO, {"optim_wrapper.paramwise_cfg": dict(norm_decay_mul=0.0)},
     r"optim_wrapper\.paramwise_cfg\.norm_decay_mul: DefaultOptimWrapperConstructor's paramwise_cfg "
     r".*'norm_decay_mult'"),
    # PolyLR's **kwargs go to PolyParamScheduler (param_name filled in).
    (DEMO, {"param_scheduler.1.powr": 1.0}, r"param_scheduler\[1\]\.powr: PolyLR .*'power'"),
    (DEMO, {"env_cfg.cudnn_benchmak": True}, r"env_cfg\.cudnn_benchmak: .*'cudnn_benchmark'"),
    (DEMO, {"env_cfg.mp_cfg.mp_start_mehtod": "fork"}, r"env_cfg\.mp_cfg\.mp_start_mehtod: .*'mp_start_method'"),
    (DEMO, {"env_cfg.dist_cfg.timout": 60}, r"env_cfg\.dist_cfg\.timout: init_dist .*'timeout'"),  # -> torch
    (DEMO, {"randomness.sed": 1}, r"randomness\.sed: Runner\.set_randomness .*'seed'"),
    (DEMO, {"log_processor.by_epch": False}, r"log_processor\.by_epch: LogProcessor .*'by_epoch'"),
    (DEMO, {"visualizer.vis_backends": [dict(type="LocalVisBackend", save_dri="v")]},
     r"visualizer\.vis_backends\[0\]\.save_dri: LocalVisBackend .*'save_dir'"),
    (RPN, {"auto_scale_lr.base_batch_sise": 16}, r"auto_scale_lr\.base_batch_sise: .*'base_batch_size'"),
    (DEMO, {"model_wrapper_cfg": dict(find_unused_parameter=True)},
     r"model_wrapper_cfg\.find_unused_parameter: MMDistributedDataParallel .*'find_unused_parameters'"),
    (DEMO, {"train_dataloader.sampler.shufle": True},
     r"train_dataloader\.sampler\.shufle: InfiniteSampler .*'shuffle'"),
    # A top-level typo beside the real key (what --cfg-options trian_cfg.max_iters=2 makes) and one without it.
    (DEMO, {"trian_cfg.max_iters": 2}, r"'trian_cfg' is not a config key the Runner reads; did you mean 'train_cfg'"),
    (DEMO, {"acel": True}, r"'acel' .*did you mean 'accel'"),
])
def test_misspelt_keys_outside_the_model_name_the_nearest_valid_one(config, option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config, option)


def test_correct_keys_of_every_family_pass():
    cfg = load_config(DEMO, {
        "accel": True, "train_cfg.val_begin": 1, "train_cfg.dynamic_intervals": [(100, 20)], "val_cfg.fp16": False,
        "default_hooks.checkpoint.priority": "NORMAL", "default_hooks.visualization": dict(type="SegOverlayHook",
                                                                                          out_dir="o"),
        "custom_hooks": [dict(type="EMAHook", momentum=1e-4, update_buffers=True, priority=49)],
        "optim_wrapper.type": "AmpOptimWrapper", "optim_wrapper.loss_scale": "dynamic",
        "optim_wrapper.accumulative_counts": 2, "optim_wrapper.paramwise_cfg": dict(norm_decay_mult=0.0),
        "param_scheduler.1.convert_to_iter_based": False, "env_cfg.dist_cfg.timeout": 1800,
        "env_cfg.mp_cfg.opencv_num_threads": 0, "randomness.diff_rank_seed": False, "model_wrapper_cfg": dict(
            find_unused_parameters=True), "visualizer.name": "v", "train_dataloader.num_batch_per_epoch": 2,
        "val_pipeline": [dict(type="LoadImageFromFile")]})
    assert cfg.accel and cfg.val_pipeline


def test_typed_dicts_anywhere_under_the_model_are_checked_against_their_class():
    """loss_decode is a dict or a list of typed dicts that the segmentor's loss stack builds; each is checked
    against the loss class its type names, and a type densekit does not implement is refused by name."""
    base = Config.fromfile(DEMO)
    for losses in (dict(type="CrossEntropyLoss", loss_wieght=1.0),
                   [dict(type="CrossEntropyLoss", loss_weight=1.0), dict(type="DiceLoss", loss_wieght=3.0)]):
        cfg = base.copy()
        cfg.model.decode_head.loss_decode = losses
        with pytest.raises(ConfigError, match=r"model\.decode_head\.loss_decode(\[1\])?\.loss_wieght: "
                                              r"(CrossEntropyLoss|DiceLoss) .*did you mean 'loss_weight'"):
            load_config(cfg)
    cfg = base.copy()
    cfg.model.decode_head.loss_decode = dict(type="NoSuchLoss")
    with pytest.raises(ConfigError, match=r"model\.decode_head\.loss_decode\.type='NoSuchLoss' is not a loss"):
        load_config(cfg)
    cfg = base.copy()
    cfg.model.decode_head.loss_decode = [dict(type="CrossEntropyLoss", loss_weight=1.0), dict(type="DiceLoss")]
    assert load_config(cfg).model


class _LayerDecayConstructor(DefaultOptimWrapperConstructor):
    """Stands for constructors such as mmseg's layer-wise lr decay: own paramwise keys, the default's wrapper."""


def test_paramwise_cfg_is_checked_only_for_the_default_constructor():
    cfg = Config.fromfile(DEMO)
    cfg.optim_wrapper.constructor = _LayerDecayConstructor
    cfg.optim_wrapper.paramwise_cfg = dict(num_layers=12, decay_rate=0.9)
    assert load_config(cfg).optim_wrapper.paramwise_cfg.num_layers == 12
    cfg.optim_wrapper.accumulative_count = 2  # the wrapper's keys are still the wrapper's
    with pytest.raises(ConfigError, match=r"optim_wrapper\.accumulative_count: .*'accumulative_counts'"):
        load_config(cfg)


def test_the_tools_print_a_misspelt_key_as_one_line_and_exit_1():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), DEMO, "--cfg-options",
                             "train_dataloader.batch_sise=2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.startswith("error: config key train_dataloader.batch_sise") and "'batch_size'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option, key", [("train_cfg.max_iter=40", "train_cfg.max_iter"),
                                         ("default_hooks.checkpoint.intreval=5", "default_hooks.checkpoint.intreval"),
                                         ("model.decode_head.loss_decode.type=NoSuchLoss",
                                          "model.decode_head.loss_decode.type='NoSuchLoss'")])
def test_train_refuses_a_typo_before_making_a_work_dir(tmp_path, option, key):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), DEMO, "--cfg-options", option],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: config key {key}") and "did you mean" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no work_dirs/ left behind
