"""The Swin V2 configs (``upernet_swinv2_t_ade``, ``rpn_swinv2_t_fpn_1x_coco``): the official Swin V2 weight-decay
rule parameter by parameter, the window-8 / 256 checkpoint at window 16, and (slow) a few training iterations on
generated demo data with a falling loss, then ``densekit test`` and ``densekit infer``.

The decay rule is written here from the official ``set_weight_decay`` (microsoft/Swin-Transformer ``optimizer.py``,
with ``skip_keywords`` ``cpb_mlp``, ``logit_scale``, ``relative_position_bias_table`` and ``skip_list``
``absolute_pos_embed``), not from the configs' ``paramwise_cfg``, and held against mmengine's built optimizer.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from densekit.apis import build_model, load_config, train
from densekit.datasets.det.demo import make_demo_det_dataset
from densekit.datasets.seg.demo import make_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
UPERNET = ROOT / "configs" / "upernet_swinv2_t_ade.py"
RPN = ROOT / "configs" / "rpn_swinv2_t_fpn_1x_coco.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

SKIP_KEYWORDS = ("cpb_mlp", "logit_scale", "relative_position_bias_table")
SKIP_LIST = ("absolute_pos_embed",)


def official_no_decay(name: str, param: torch.Tensor) -> bool:
    """The official Swin V2 ``set_weight_decay`` test for one parameter (names as in its ``named_parameters``)."""
    return (param.ndim == 1 or name.endswith(".bias") or name.split(".")[-1] in SKIP_LIST
            or any(key in name for key in SKIP_KEYWORDS))


def _groups(cfg: Config, model: torch.nn.Module) -> tuple[dict[str, float], dict[str, float]]:
    """mmengine's optimizer for the config: (weight decay, lr) of every parameter of ``model`` by name."""
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    by_id = {id(p): (g["weight_decay"], g["lr"]) for g in wrapper.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(by_id) == len(named), "every parameter is in exactly one group"
    return {n: by_id[id(p)][0] for n, p in named.items()}, {n: by_id[id(p)][1] for n, p in named.items()}


# Names the rule must get right, one of each kind: (name, decays?).
BACKBONE_NAMES = [
    ("backbone.patch_embed.proj.weight", True), ("backbone.patch_embed.proj.bias", False),
    ("backbone.patch_embed.norm.weight", False),
    ("backbone.stages.0.blocks.1.attn.qkv.weight", True), ("backbone.stages.0.blocks.1.attn.q_bias", False),
    ("backbone.stages.0.blocks.1.attn.v_bias", False), ("backbone.stages.0.blocks.1.attn.logit_scale", False),
    ("backbone.stages.0.blocks.1.attn.cpb_mlp.0.weight", False), ("backbone.stages.0.blocks.1.attn.cpb_mlp.0.bias",
                                                                   False),
    ("backbone.stages.2.blocks.5.attn.cpb_mlp.2.weight", False), ("backbone.stages.2.blocks.5.attn.proj.weight", True),
    ("backbone.stages.2.blocks.5.attn.proj.bias", False), ("backbone.stages.2.blocks.5.norm1.weight", False),
    ("backbone.stages.2.blocks.5.norm2.bias", False), ("backbone.stages.3.blocks.0.mlp.fc1.weight", True),
    ("backbone.stages.3.blocks.0.mlp.fc2.bias", False), ("backbone.stages.1.downsample.reduction.weight", True),
    ("backbone.stages.1.downsample.norm.weight", False), ("backbone.out_norms.3.weight", False),
]
HEAD_NAMES = {
    UPERNET: [("decode_head.conv_seg.weight", True), ("decode_head.conv_seg.bias", False),
              ("auxiliary_head.conv_seg.weight", True)],
    RPN: [("neck.lateral_convs.0.conv.weight", True), ("neck.lateral_convs.0.conv.bias", False),
          ("rpn_head.rpn_conv.weight", True), ("rpn_head.rpn_cls.bias", False)],
}


@pytest.mark.parametrize("config", [UPERNET, RPN], ids=["upernet", "rpn"])
def test_weight_decay_follows_the_official_swin_v2_rule_parameter_by_parameter(config: Path):
    cfg = load_config(str(config))
    model = build_model(cfg, pretrained=False)
    decays, lrs = _groups(cfg, model)
    base_wd, base_lr = cfg.optim_wrapper.optimizer.weight_decay, cfg.optim_wrapper.optimizer.lr
    expected = {n: 0.0 if official_no_decay(n, p) else base_wd for n, p in model.named_parameters()}
    assert decays == expected
    assert set(lrs.values()) == {base_lr}, "no lr multiplier in the recipe"
    for name, decays_it in BACKBONE_NAMES + HEAD_NAMES[config]:
        assert decays[name] == (base_wd if decays_it else 0.0), name
    assert 0 < sum(wd == 0.0 for wd in decays.values()) < len(decays)
    for key in cfg.optim_wrapper.paramwise_cfg.custom_keys:  # a key that names nothing would be silently dropped
        assert any(key in name for name in decays), key


@pytest.mark.parametrize("config", [UPERNET, RPN], ids=["upernet", "rpn"])
def test_window_8_checkpoint_loads_at_window_16_unresized(config: Path, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    source = timm.create_model("swinv2_tiny_window8_256", pretrained=False).state_dict()
    path = tmp_path / "swinv2_tiny_patch4_window8_256.pth"
    torch.save({"model": source}, path)
    cfg = load_config(str(config))
    cfg.model.backbone.pretrained = str(path)
    backbone = build_model(cfg).backbone
    assert backbone.window_size == 16 and backbone.pretrained_window_size == (8, 8, 8, 8)
    ours = backbone.state_dict()
    for theirs, mine in (("layers.2.blocks.3.attn.cpb_mlp.0.weight", "stages.2.blocks.3.attn.cpb_mlp.0.weight"),
                         ("layers.2.blocks.3.attn.cpb_mlp.2.weight", "stages.2.blocks.3.attn.cpb_mlp.2.weight"),
                         ("layers.0.blocks.1.attn.logit_scale", "stages.0.blocks.1.attn.logit_scale"),
                         ("layers.3.blocks.1.norm2.weight", "stages.3.blocks.1.norm2.weight")):
        assert torch.equal(ours[mine], source[theirs]), mine


# --------------------------------------------------------------------------- training, test and infer on demo data
SIDE = 128  # stage 0 is 32x32 tokens: two windows of 16 with shifted blocks; the later stages one window each


def _seg_config(data_root: Path, iters: int) -> Config:
    """``upernet_swinv2_t_ade`` on the generated demo data (6 classes, two 128x128 images, no augmentation), its
    optimizer and paramwise rules kept, the lr schedule a constant lr (the recipe's 1500-iteration warm-up would
    keep a few iterations at lr ~0)."""
    cfg = load_config(str(UPERNET))
    cfg.model.data_preprocessor.size = (SIDE, SIDE)
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.num_classes = 6
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    for loader, split in ((cfg.train_dataloader, "training"), (cfg.val_dataloader, "validation")):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = dict(type="DemoDataset", data_root=str(data_root), img_dir=f"images/{split}",
                              ann_dir=f"annotations/{split}", num_train=2, num_val=2, size=(SIDE, SIDE),
                              pipeline=pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1)
    return _short_run(cfg, iters, lr=2e-4)


def _rpn_config(data_root: Path, iters: int) -> Config:
    """``rpn_swinv2_t_fpn_1x_coco`` on the generated demo detection data (two 128x128 images), iteration-based,
    its optimizer and paramwise rules kept, a constant lr."""
    cfg = load_config(str(RPN))
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadDetAnnotations"), dict(type="PackDetInputs")]
    for loader, split in ((cfg.train_dataloader, "train"), (cfg.val_dataloader, "val")):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = dict(type="DemoDetDataset", data_root=str(data_root), split=split, num_train=2, num_val=2,
                              size=(SIDE, SIDE), test_mode=split == "val", pipeline=pipeline)
    cfg.train_dataloader.sampler = dict(type="InfiniteSampler", shuffle=True)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1)
    cfg.log_processor = dict(by_epoch=False)
    return _short_run(cfg, iters, lr=2e-4)


def _short_run(cfg: Config, iters: int, lr: float) -> Config:
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = []
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=1, log_metric_by_epoch=False)
    cfg.default_hooks.checkpoint = dict(type="SafeCheckpointHook", by_epoch=False, interval=iters)
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
    return cfg


def _losses(runner) -> np.ndarray:
    return np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(str(root / "seg"), num_train=2, num_val=2, size=(SIDE, SIDE), progress=False)
    make_demo_det_dataset(str(root / "det"), num_train=2, num_val=2, size=(SIDE, SIDE))
    return {"seg": root / "seg", "det": root / "det"}


CASES = {"upernet": (_seg_config, "seg"), "rpn": (_rpn_config, "det")}


@pytest.mark.parametrize("case", CASES)
def test_one_training_step_with_the_recipe(case, demo_data, tmp_path):
    make, data = CASES[case]
    runner = train(make(demo_data[data], iters=1), work_dir=str(tmp_path / "work"))
    losses = _losses(runner)
    assert len(losses) == 1 and np.isfinite(losses).all()
    assert (tmp_path / "work" / "iter_1.pth").is_file()


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densekit", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_trains_with_a_falling_loss_then_tests_and_infers(case, demo_data, tmp_path):
    make, data = CASES[case]
    iters, work = 8, tmp_path / "work"
    cfg = make(demo_data[data], iters=iters)
    losses = _losses(train(cfg, work_dir=str(work)))
    assert len(losses) == iters and np.isfinite(losses).all()
    first, last = losses[:2].mean(), losses[-2:].mean()
    print(f"\n{case}: loss {np.round(losses, 3).tolist()}")
    assert last < 0.9 * first, f"loss fell only from {first:.3f} to {last:.3f}"
    config, checkpoint = tmp_path / f"{case}.py", work / f"iter_{iters}.pth"
    cfg.dump(str(config))
    tested = _cli("test", config, checkpoint, "--work-dir", tmp_path / "test")
    assert tested.returncode == 0, tested.stderr[-3000:]
    split = "images/validation" if data == "seg" else "images/val"
    image = sorted((demo_data[data] / split).iterdir())[0]
    inferred = _cli("infer", config, checkpoint, image, "--out-dir", tmp_path / "out")
    assert inferred.returncode == 0, inferred.stderr[-3000:]
    assert any((tmp_path / "out").iterdir())
