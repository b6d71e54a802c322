"""SwinUnet(version=2): Swin V2 blocks in encoder and decoder, the version option, V2 ImageNet loading mirrored
into the decoder, and configs/swin_unet_v2_t_synapse.py (its weight-decay exclusions, one training step).

A slim model covers the sizes and paths in the default run; the full Swin-Unet V2-T (the config's model, ~27 M
parameters) at the issue's sizes is ``slow``, as is the end-to-end run of the config on the MR sample
(``../shared/data/medical``; train, ``densekit test``, ``densekit infer``).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers.paths import SHARED_DATA, scratch_dir
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from densekit.backbones.swin_v2 import SwinV2Block
from densekit.convert.report import CheckpointError
from densekit.heads.swin_unet_decoder import SwinUnetDecoder
from densekit.models import SwinUnet
from densekit.models.swin_unet_v2 import SwinUnetV2Decoder, SwinV2UpStage
from densekit.registry import MODELS
from densekit.structures import SegDataSample

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "swin_unet_v2_t_synapse.py"
MR = SHARED_DATA / "medical"
SLIM = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.0,
            in_chans=1)
SIZES = [(224, 224), (256, 256), (320, 448)]


def slim_v2(attn_impl: str = "sdpa", seed: int = 0, **backbone) -> SwinUnet:
    torch.manual_seed(seed)
    return SwinUnet(version=2, backbone={**SLIM, "attn_impl": attn_impl, **backbone},
                    decode_head=dict(num_classes=3))


def _noisy(model: torch.nn.Module) -> None:
    """Give norms, logit scales and biases non-default values, so that a wrong placement shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(("logit_scale", "q_bias", "v_bias", ".bias")):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


# ------------------------------------------------------------------------------------- structure
def test_version_2_builds_v2_blocks_in_encoder_and_decoder():
    model = slim_v2(pretrained_window_size=(8, 8, 8, 6))
    assert isinstance(model.decode_head, SwinUnetV2Decoder)
    assert all(isinstance(stage, SwinV2UpStage) for stage in model.decode_head.stages)
    blocks = [b for s in model.decode_head.stages for b in s.blocks] + [b for s in model.backbone.stages
                                                                      for b in s.blocks]
    assert all(isinstance(b, SwinV2Block) for b in blocks)
    # Decoder stage k mirrors encoder stage 2-k: its heads and its pretrained window.
    assert [s.blocks[0].attn.num_heads for s in model.decode_head.stages] == [4, 2, 1]
    assert [s.blocks[0].attn.pretrained_window_size for s in model.decode_head.stages] == [8, 8, 8]
    # PatchExpand / FinalPatchExpand and the skip projections keep the V1 decoder's names: only blocks differ.
    v1 = SwinUnet(backbone={k: v for k, v in SLIM.items()}, decode_head=dict(num_classes=3))
    keys = {k for k in model.decode_head.state_dict() if ".blocks." not in k}
    assert keys == {k for k in v1.decode_head.state_dict() if ".blocks." not in k}


def test_version_1_is_still_the_default_v1_network():
    model = SwinUnet(backbone=dict(SLIM), decode_head=dict(num_classes=3))
    assert model.version == 1 and type(model.decode_head) is SwinUnetDecoder
    assert not any("cpb_mlp" in k for k in model.state_dict())


@pytest.mark.parametrize("version", [0, 3, "2", True])
def test_unknown_version_is_refused_by_name(version):
    with pytest.raises(ValueError, match=r"version must be one of \[1, 2\].*version="):
        SwinUnet(version=version, backbone=dict(SLIM), decode_head=dict(num_classes=3))


def test_mismatched_encoder_decoder_and_keys_are_refused_by_name():
    with pytest.raises(TypeError, match="version=1 needs a densekit SwinTransformer.*with version=2"):
        SwinUnet(backbone=dict(type="SwinTransformerV2", **SLIM), decode_head=dict(num_classes=3))
    with pytest.raises(TypeError, match="version=1 needs .* got SwinTransformerV2 for backbone.type='swinv2_t'"):
        SwinUnet(backbone=dict(type="swinv2_t"), decode_head=dict(num_classes=3))
    with pytest.raises(TypeError, match="version=2 needs a densekit SwinTransformerV2.*with version=1"):
        SwinUnet(version=2, backbone=dict(type="SwinTransformer", **SLIM), decode_head=dict(num_classes=3))
    with pytest.raises(ValueError, match="decode_head must be a SwinUnetV2Decoder, got 'SwinUnetDecoder'"):
        SwinUnet(version=2, backbone=dict(SLIM), decode_head=dict(type="SwinUnetDecoder", num_classes=3))
    with pytest.raises(ValueError, match="backbone.bias_resize"):
        SwinUnet(version=2, backbone={**SLIM, "bias_resize": "bicubic"}, decode_head=dict(num_classes=3))
    with pytest.raises(TypeError, match="pretrained_window_size"):  # a V2-only key given to V1
        SwinUnet(backbone={**SLIM, "pretrained_window_size": 8}, decode_head=dict(num_classes=3))


# ------------------------------------------------------------------------------- sizes and paths
@pytest.mark.parametrize("size", SIZES + [(61, 133)])
def test_slim_v2_runs_and_sdpa_agrees_with_reference(size):
    sdpa, reference = slim_v2("sdpa").eval(), slim_v2("reference").eval()
    _noisy(sdpa)
    reference.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        a, b = sdpa(x, mode="tensor"), reference(x, mode="tensor")
    assert a.shape == (2, 3, *size) and torch.isfinite(a).all()
    assert (a - b).abs().max().item() < 1e-4


def test_sdpa_and_reference_gradients_agree():
    sdpa, reference = slim_v2("sdpa").train(), slim_v2("reference").train()
    _noisy(sdpa)
    reference.load_state_dict(sdpa.state_dict())
    x = torch.randn(1, 1, 70, 90)
    target = torch.randint(0, 3, (1, 70, 90))
    grads = []
    for model in (sdpa, reference):
        torch.nn.functional.cross_entropy(model(x, mode="tensor"), target).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert grad is not None, name
        assert torch.allclose(grad, grads[1][name], atol=1e-5, rtol=1e-4), name


@pytest.fixture(scope="module")
def swin_unet_v2_t() -> tuple[SwinUnet, SwinUnet]:
    """The config's model, with SDPA and with reference attention, the same (noisy) weights."""
    init_default_scope("densekit")
    cfg = Config.fromfile(str(CONFIG))
    torch.manual_seed(0)
    sdpa = MODELS.build(cfg.model).eval()
    _noisy(sdpa)
    cfg.model.backbone.attn_impl = "reference"
    reference = MODELS.build(cfg.model).eval()
    reference.load_state_dict(sdpa.state_dict())
    return sdpa, reference


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_swin_unet_v2_t_runs_at_the_sizes_of_the_issue(swin_unet_v2_t, size):
    sdpa, reference = swin_unet_v2_t
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        a, b = sdpa(x, mode="tensor"), reference(x, mode="tensor")
    assert a.shape == (1, 9, *size) and torch.isfinite(a).all()
    assert (a - b).abs().max().item() < 1e-4


# ------------------------------------------------------------------------------------ V2 loading
@pytest.fixture(scope="module")
def timm_v2_file(request) -> tuple[Path, dict]:
    """A random timm ``swinv2_tiny_window8_256`` (noisy norms, logit scales, biases) saved as its release name."""
    torch.manual_seed(0)
    net = timm.create_model("swinv2_tiny_window8_256", pretrained=False)
    _noisy(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = scratch_dir(request, "v2") / "swinv2_tiny_patch4_window8_256.pth"
    torch.save(state, path)
    return path, state


def test_timm_v2_file_loads_into_encoder_and_mirrored_decoder(timm_v2_file):
    path, timm_sd = timm_v2_file
    init_default_scope("densekit")
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.pretrained = str(path)
    model = MODELS.build(cfg.model)
    report, sd = model.pretrained_report, model.state_dict()

    def timm_key(stage: int, rest: str) -> str:
        # timm keeps patch merging at the start of the next stage.
        if rest.startswith("downsample."):
            return f"layers.{stage + 1}.{rest}"
        return f"layers.{stage}.{rest}"

    encoder = [k for k in sd if k.startswith("backbone.stages.")]
    for key in encoder:
        stage, rest = key.split(".", 3)[2:]
        assert torch.equal(sd[key], timm_sd[timm_key(int(stage), rest)]), key
    for name in ("proj.bias", "norm.weight", "norm.bias"):
        assert torch.equal(sd[f"backbone.patch_embed.{name}"], timm_sd[f"patch_embed.{name}"])
    # in_chans 1: the RGB kernel summed over its channels (= the grey slice repeated to 3 channels).
    assert torch.allclose(sd["backbone.patch_embed.proj.weight"], timm_sd["patch_embed.proj.weight"].sum(1, True))
    assert torch.equal(sd["norm.weight"], timm_sd["norm.weight"])  # the final norm becomes the bottleneck norm
    # Decoder stage k <- encoder stage 2-k (official layers_up.{3-i} <- layers.i), block for block.
    decoder_blocks = [k for k in sd if k.startswith("decode_head.stages.") and ".blocks." in k]
    assert len(decoder_blocks) == 3 * 2 * 17  # 3 stages x 2 blocks x the V2 block's 17 tensors
    for key in decoder_blocks:
        k, rest = key.split(".", 3)[2:]
        assert torch.equal(sd[key], timm_sd[f"layers.{2 - int(k)}.{rest}"]), key
    # The report says what was renamed, mirrored and left at its initialisation, and which windows are used.
    assert ("layers.1.downsample.reduction.weight", "backbone.stages.0.downsample.reduction.weight") in report.renamed
    assert ("layers.0.blocks.1.attn.cpb_mlp.0.weight", "backbone.stages.0.blocks.1.attn.cpb_mlp.0.weight") \
        in report.renamed
    assert ("layers.0.blocks.1.attn.logit_scale", "decode_head.stages.2.blocks.1.attn.logit_scale") in report.mirrored
    assert len(report.mirrored) >= len(decoder_blocks)
    missing = {key for key, _ in report.missing}
    assert {"decode_head.expand.expand.weight", "decode_head.stages.0.concat.weight", "decode_head.conv_seg.weight",
            "decode_head.up.expand.weight", "decode_head.norm.weight"} <= missing
    assert not any(".blocks." in key for key in missing) and not report.missing_weights()
    assert any(key.startswith("layers.2.blocks.5.") for key, _ in report.dropped)  # 6 blocks in timm, 2 here
    assert report.layout == "timm" and "window 7" in report.windows and "WARNING" not in report.windows


def test_hf_v2_file_loads_into_the_encoder(tmp_path):
    """The HF layout (q, k, v split) goes through the same conversion: the fused q/k/v equals HF's rows."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=64, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                       window_size=4)
    torch.manual_seed(0)
    hf = transformers.Swinv2Model(config)
    path = tmp_path / "hf_swinv2.pth"
    torch.save(hf.state_dict(), path)
    model = slim_v2(pretrained=str(path), window_size=4)
    hf_sd, sd = hf.state_dict(), model.state_dict()
    prefix = "encoder.layers.1.blocks.0.attention.self."
    fused = torch.cat([hf_sd[prefix + f"{n}.weight"] for n in ("query", "key", "value")])
    assert torch.equal(sd["backbone.stages.1.blocks.0.attn.qkv.weight"], fused)
    assert torch.equal(sd["decode_head.stages.1.blocks.0.attn.qkv.weight"], fused)
    assert torch.equal(sd["decode_head.stages.1.blocks.0.attn.q_bias"], hf_sd[prefix + "query.bias"])
    assert model.pretrained_report.layout == "hf"


def test_official_v2_layout_loads_into_encoder_and_mirrored_decoder(timm_v2_file, tmp_path):
    """The official layout (``{'model': ...}``, merging at the end of stage i, position buffers present), written
    from the timm file: the same weights land in the same places."""
    _, timm_sd = timm_v2_file
    official = {}
    for key, value in timm_sd.items():
        stage = key.split(".")[1] if key.startswith("layers.") else None
        if stage is not None and ".downsample." in key:
            key = key.replace(f"layers.{stage}.", f"layers.{int(stage) - 1}.", 1)
        official[key.replace("head.fc.", "head.")] = value
        if key.endswith(".attn.logit_scale"):  # the buffers the official blocks save
            official[key.replace("logit_scale", "relative_coords_table")] = torch.zeros(1, 15, 15, 2)
            official[key.replace("logit_scale", "relative_position_index")] = torch.zeros(64, 64, dtype=torch.long)
    path = tmp_path / "swinv2_tiny_patch4_window8_256_official.pth"
    torch.save({"model": official}, path)
    init_default_scope("densekit")
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.pretrained = str(path)
    model = MODELS.build(cfg.model)
    sd, report = model.state_dict(), model.pretrained_report
    assert report.layout == "official"
    assert torch.equal(sd["backbone.stages.0.downsample.reduction.weight"],
                       timm_sd["layers.1.downsample.reduction.weight"])
    assert torch.equal(sd["backbone.stages.2.downsample.norm.bias"], timm_sd["layers.3.downsample.norm.bias"])
    assert torch.equal(sd["decode_head.stages.0.blocks.1.attn.cpb_mlp.2.weight"],
                       timm_sd["layers.2.blocks.1.attn.cpb_mlp.2.weight"])
    assert any(key.endswith("relative_coords_table") for key, _ in report.dropped)


def test_a_whole_v2_swin_unet_checkpoint_loads_as_pretrained(tmp_path):
    """A densekit Swin-Unet V2 file (what training saves) given to ``pretrained`` loads whole, not mirrored."""
    source = slim_v2(seed=1)
    _noisy(source)
    path = tmp_path / "swin_unet_v2.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = slim_v2(seed=2, pretrained=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    report = model.pretrained_report
    assert report.layout == "densekit" and not report.mirrored and not report.missing
    assert report.windows.startswith("window 7")


def test_v1_file_into_v2_swin_unet_is_refused(tmp_path):
    torch.manual_seed(0)
    v1 = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, depths=(2, 2, 2, 2))
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(v1.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"swin_tiny_patch4_window7_224\.pth: a Swin V1 checkpoint .* Swin V2 "
                                              r"Swin-Unet \(version=2\).*version=1"):
        SwinUnet(version=2, backbone=dict(embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
                                          in_chans=1, pretrained=str(path)), decode_head=dict(num_classes=3))


def test_v2_file_into_v1_swin_unet_is_refused(timm_v2_file):
    with pytest.raises(CheckpointError, match=r"a Swin V2 checkpoint .* Swin V1 Swin-Unet \(version=1\).*version=2"):
        SwinUnet(backbone=dict(embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), in_chans=1,
                               pretrained=str(timm_v2_file[0])), decode_head=dict(num_classes=3))


# ------------------------------------------------------------------------------------------ config
def test_config_optimizer_exempts_norms_biases_logit_scales_and_cpb_mlp_from_weight_decay():
    init_default_scope("densekit")
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.update(embed_dim=16, num_heads=(1, 2, 4, 8))
    cfg.model.decode_head.in_channels = [16, 32, 64, 128]
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: group["weight_decay"] for group in wrapper.optimizer.param_groups for p in group["params"]}
    assert decay.keys() == set(names.values())
    exempt = ("logit_scale", "cpb_mlp", "q_bias", "v_bias", "norm", ".bias")
    for name, wd in decay.items():
        if any(word in name for word in exempt):
            assert wd == 0.0, name
        else:  # qkv / proj / MLP / reduction / expand / classifier weights
            assert wd == pytest.approx(1e-4) and name.endswith("weight"), name
    # Each exempted kind is there in encoder and decoder (not vacuous).
    for word in exempt[:4]:
        for part in ("backbone.", "decode_head."):
            assert any(word in n and n.startswith(part) for n in decay), (word, part)


def _tiny_cfg(work_dir: Path, iters: int) -> Config:
    """The real config with a slim encoder (embed 48, window 4) on 64x64 slices of the MR sample."""
    cfg = Config.fromfile(str(CONFIG))
    size = (64, 64)
    cfg.work_dir = str(work_dir)
    cfg.model.data_preprocessor.size = size
    cfg.model.backbone.update(embed_dim=48, window_size=4, pretrained_window_size=0, drop_path_rate=0.0)
    cfg.model.decode_head.update(in_channels=[48, 96, 192, 384], num_classes=3)
    data = dict(type="NiftiSliceDataset", images=[str(MR / "mr_crop.nii.gz")],
                labels=[str(MR / "mr_crop_label.nii.gz")], classes=["background", "structure_1", "structure_2"],
                window="mr")
    train = [dict(type="RandomGenerator", output_size=size), dict(type="PackMedicalInputs")]
    test = [dict(type="ResizeSlice", output_size=size), dict(type="PackMedicalInputs")]
    cfg.train_dataloader = dict(batch_size=8, num_workers=0, sampler=dict(type="InfiniteSampler", shuffle=True),
                                dataset=dict(data, pipeline=train))
    cfg.test_dataloader = dict(batch_size=8, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                               dataset=dict(data, pipeline=test))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters)
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer.lr = 0.01  # SGD as the recipe, a step fit for a few iterations from scratch
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=5)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=iters)
    cfg.log_processor = dict(by_epoch=False)
    cfg.env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
    cfg.randomness = dict(seed=0)
    return cfg


def test_config_model_builds_runs_and_takes_a_training_step():
    """Fast: the config's model (slim widths), a forward at 224 and one SGD step that changes the weights."""
    init_default_scope("densekit")
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.update(embed_dim=16, num_heads=(1, 2, 4, 8))
    cfg.model.decode_head.in_channels = [16, 32, 64, 128]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    inputs = list(torch.rand(2, 1, 224, 224))
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo={"img_shape": (224, 224), "ori_shape": (224, 224)})
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 9, (1, 224, 224)))
        samples.append(sample)
    before = model.decode_head.stages[0].blocks[0].attn.cpb_mlp[0].weight.clone()
    losses = model.train_step(dict(inputs=inputs, data_samples=samples), wrapper)
    assert {"loss_ce", "loss_dice"} <= set(losses) and all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, model.decode_head.stages[0].blocks[0].attn.cpb_mlp[0].weight)


@pytest.mark.slow
@pytest.mark.skipif(not (MR / "mr_crop.nii.gz").is_file(), reason=f"MR sample not found in {MR}")
def test_config_trains_on_mr_slices_then_test_and_infer_exit_0(tmp_path):
    from densekit.apis import train

    iters = 20
    cfg = _tiny_cfg(tmp_path / "work", iters)
    runner = train(cfg, work_dir=cfg.work_dir)
    losses = np.asarray(runner.message_hub.get_scalar("train/loss").data[0], np.float64)
    assert len(losses) == iters and np.isfinite(losses).all()
    first, last = losses[:3].mean(), losses[-5:].mean()
    print(f"\nSwin-Unet V2 on MR slices: loss {first:.3f} -> {last:.3f}")
    assert last < 0.8 * first, np.round(losses, 3).tolist()
    config, checkpoint = tmp_path / "swin_unet_v2_mr.py", tmp_path / "work" / f"iter_{iters}.pth"
    cfg.dump(str(config))
    for args in (["test", str(config), str(checkpoint), "--work-dir", str(tmp_path / "test_work"), "--out-dir",
                  str(tmp_path / "test_out")],
                 ["infer", str(config), str(checkpoint), str(MR / "mr_crop.nii.gz"), "--out-dir",
                  str(tmp_path / "infer_out"), "--window", "mr"]):
        result = subprocess.run([sys.executable, "-m", "densekit", *args], cwd=REPO, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert (tmp_path / "test_out" / "medical_metrics.csv").is_file()
    assert (tmp_path / "infer_out" / "mr_crop_pred.nii.gz").is_file()
