"""The plain-ViT configs as whole models: each builds and takes a training step (default run); ViT-UPerNet and
MAE-UPerNet logits equal a reference assembled from timm's ViT, the reference neck definitions and the same head;
each segmentation config trains on generated data with a falling loss, tests and infers (slow)."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData, PixelData
from vit_neck_reference import RefFeature2Pyramid, RefMultiLevelNeck

from densekit.apis import inference_model, init_model, train
from densekit.engine.demo import DEMO_CONFIG, load_demo_config
from densekit.registry import MODELS
from densekit.structures import DetDataSample, SegDataSample

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEG_CONFIGS = ("upernet_vit_b_mln_ade", "upernet_mae_vit_b_ade", "upernet_dinov2_vit_s_ade")


def _build(name: str, **backbone) -> torch.nn.Module:
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    cfg.model.backbone.update(backbone)
    init_default_scope("densekit")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SyncBN.*")
        return MODELS.build(cfg.model)


def _seg_samples(h: int, w: int, n: int = 2) -> list[SegDataSample]:
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w), generator=gen))
        samples.append(sample)
    return samples


@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_vit_seg_config_takes_a_training_step(name):
    torch.manual_seed(0)
    model = _build(name, img_size=64)
    model.train()
    losses = model(torch.randn(2, 3, 64, 64), _seg_samples(64, 64), mode="loss")
    total = sum(v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.neck.num_outs == 4


def test_vit_rpn_config_takes_a_training_step():
    torch.manual_seed(0)
    model = _build("rpn_vit_b_sfp_coco", img_size=64)
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128), scale_factor=(1.0, 1.0),
                                             batch_input_shape=(96, 128), pad_shape=(96, 128)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 20.0, 70.0, 90.0]]), labels=torch.tensor([0]))
        sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    model.train()
    losses = model(torch.randn(2, 3, 96, 128), samples, mode="loss")
    total = sum(v.sum() if v.dim() else v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.model.blocks[11].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.neck.strides == [4, 8, 16, 32, 64]


def _reference_logits(model: torch.nn.Module, neck: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's ViT (same weights) on the input padded to whole patches (mmseg's PatchEmbed), the reference neck,
    the model's own UPerHead, and the bilinear resize to the input."""
    vit = model.backbone
    ref = timm.create_model(vit.model_name, img_size=512, num_classes=0, dynamic_img_size=True).eval()
    ref.load_state_dict({k[len("model."):]: v for k, v in vit.state_dict().items()}, strict=False)
    h, w = x.shape[-2:]
    padded = F.pad(x, (0, -w % 16, 0, -h % 16))
    maps = ref.forward_intermediates(padded, indices=list(vit.out_indices), norm=False, intermediates_only=True)
    maps = [m[..., : -(-h // 16), : -(-w // 16)] for m in maps]
    logits = model.decode_head(list(neck(maps)))
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.slow  # two ViT-B UPerNets at 512x512 and 500x375: about a minute each on a shared CPU
@pytest.mark.parametrize("name", ["upernet_vit_b_mln_ade", "upernet_mae_vit_b_ade"])
def test_vit_upernet_logits_equal_timm_vit_with_reference_neck(name):
    torch.manual_seed(0)
    model = _build(name).eval()
    with torch.no_grad():
        for p in model.neck.parameters():
            p.normal_(0, 0.02)
    if name == "upernet_mae_vit_b_ade":
        neck = RefFeature2Pyramid(768, [4, 2, 1, 0.5])
    else:
        neck = RefMultiLevelNeck([768] * 4, 768, [4, 2, 1, 0.5])
    neck.load_state_dict(model.neck.state_dict())
    neck.eval()
    for size in ((512, 512), (500, 375)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            got = model.encode_decode(x)
            expected = _reference_logits(model, neck, x)
        assert got.shape == (1, 150, *size)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ train, test, infer (slow)
def _demo_cfg(name: str, tmp_path: Path, iters: int) -> Config:
    """The config's model (ViT, neck, heads; backbone img_size 64) on the generated demo data, 64x64 crops."""
    cfg = load_demo_config(DEMO_CONFIG, work_dir=str(tmp_path / "work"), data_root=str(tmp_path / "data"),
                           max_iters=iters, val_interval=iters, crop_size=64, batch_size=2,
                           dataset=dict(num_train=8, num_val=2, size=(64, 64)))
    vit = Config.fromfile(str(CONFIGS / f"{name}.py"))
    num_classes = cfg.model.decode_head.num_classes
    cfg.model.backbone = dict(vit.model.backbone, img_size=64, drop_path_rate=0.0)
    cfg.model.neck = dict(vit.model.neck, norm="BN") if "norm" in vit.model.neck else vit.model.neck
    cfg.model.decode_head = dict(vit.model.decode_head, num_classes=num_classes, norm="BN")
    cfg.model.auxiliary_head = dict(vit.model.auxiliary_head, num_classes=num_classes, norm="BN")
    cfg.model.test_cfg = dict(mode="whole")
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.num_workers, loader.persistent_workers = 0, False
    cfg.optim_wrapper = copy.deepcopy(vit.optim_wrapper)
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.log_processor = dict(by_epoch=False, window_size=1)
    return cfg


@pytest.mark.slow  # a few minutes each on a shared 2-core CPU
@pytest.mark.parametrize("name", SEG_CONFIGS)
def test_vit_seg_config_trains_tests_and_infers(name, tmp_path):
    iters = 12
    cfg = _demo_cfg(name, tmp_path, iters)
    runner = train(cfg, work_dir=cfg.work_dir)
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)
    assert len(losses) == iters and np.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:2].mean(), f"loss did not fall: {np.round(losses, 3).tolist()}"
    metrics = runner.test()
    assert 0.0 <= metrics["mIoU"] <= 100.0
    model = init_model(cfg, str(Path(cfg.work_dir) / f"iter_{iters}.pth"))
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    result = inference_model(model, image)
    assert tuple(result.pred_sem_seg.data.shape[-2:]) == (70, 90)
