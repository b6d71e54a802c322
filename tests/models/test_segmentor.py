"""EncoderDecoder: UPerNet logits equal HuggingFace's (Swin-T, ConvNeXt-T, 512x512), inference modes, losses, checks.

The parity tests build the segmentor from ``configs/upernet_swin_t_ade.py``'s model (BatchNorm instead of
SyncBN, no stochastic depth) and HF ``UperNetForSemanticSegmentation`` with random weights whose BatchNorm
statistics and affines, LayerNorms, Swin bias tables and ConvNeXt layer scales are randomised (so that a
misplaced tensor shows), convert HF's state dict with ``convert_hf_upernet``, load it strictly, and compare
(a) ``model(x, mode='tensor')`` with HF's decode head output before HF's final upsampling (H/4), and
(b) both after the same bilinear upsampling to the input size: ours upsampled here, HF's as its
``forward`` returns ``logits``. Each model pair is built and run once per module.

The other tests use ``swin_t`` with a slim head at small inputs to stay fast.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hf_upernet_reference import hf_upernet
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData
from torch import nn

from densekit.convert.hf import convert_hf_upernet
from densekit.models import EncoderDecoder
from densekit.registry import TRANSFORMS
from densekit.structures import SegDataSample

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
SIZE = 512


# ------------------------------------------------------------------------------ HF parity, 512x512
def ade_model_cfg(kind: str) -> dict:
    """``configs/upernet_swin_t_ade.py``'s model with BatchNorm; ConvNeXt-T (with HF's stage norms) for ``convnext``."""
    cfg = copy.deepcopy(Config.fromfile(str(REPO / "configs" / "upernet_swin_t_ade.py")).model.to_dict())
    cfg.pop("type")
    cfg["backbone"].update(drop_path_rate=0.0)
    if kind == "convnext":
        cfg["backbone"] = dict(type="convnext_tiny", out_norm=True)
    for head in ("decode_head", "auxiliary_head"):
        cfg[head].update(norm="BN", num_classes=150)
    return cfg


def _capture(module: nn.Module, store: dict, name: str):
    return module.register_forward_hook(lambda _m, _i, out: store.__setitem__(name, out))


@pytest.fixture(scope="module", params=["swin", "convnext"])
def parity(request):
    """Logits of HF UperNet and of the densekit EncoderDecoder holding its converted weights, one pass each."""
    kind = request.param
    hf = hf_upernet(kind)
    converted, unmapped = convert_hf_upernet(hf.state_dict())
    model = EncoderDecoder(**ade_model_cfg(kind)).eval()
    model.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))  # already normalised
    theirs, ours = {}, {}
    hooks = [_capture(hf.decode_head, theirs, "decode"), _capture(hf.auxiliary_head, theirs, "aux"),
             _capture(model.backbone, ours, "features")]
    with torch.no_grad():
        theirs["upsampled"] = hf(pixel_values=x).logits
        ours["decode"] = model(x, mode="tensor")
        ours["aux"] = model.auxiliary_head(ours["features"])
    for hook in hooks:
        hook.remove()
    ours["upsampled"] = F.interpolate(ours["decode"], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    diffs = {key: (ours[key] - theirs[key]).abs().max().item() for key in ("decode", "upsampled", "aux")}
    print(f"\n{kind}: max |densekit - HF| " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return dict(kind=kind, unmapped=unmapped, ours=ours, theirs=theirs, diffs=diffs)


def test_decode_logits_match_hf_before_upsampling(parity):
    ours, theirs = parity["ours"]["decode"], parity["theirs"]["decode"]
    assert ours.shape == theirs.shape == (1, 150, SIZE // 4, SIZE // 4)
    assert theirs.abs().max() > 1  # not a degenerate comparison
    assert parity["diffs"]["decode"] < TOL


def test_logits_match_hf_after_the_same_upsampling(parity):
    """HF's ``forward`` upsamples bilinearly (align_corners=False) to the input; ours is upsampled the same way."""
    assert parity["ours"]["upsampled"].shape == parity["theirs"]["upsampled"].shape == (1, 150, SIZE, SIZE)
    assert parity["diffs"]["upsampled"] < TOL


def test_auxiliary_logits_match_hf(parity):
    assert parity["ours"]["aux"].shape == parity["theirs"]["aux"].shape == (1, 150, SIZE // 16, SIZE // 16)
    assert parity["diffs"]["aux"] < TOL


def test_only_hf_classifier_norm_is_unmapped(parity):
    expected = ["backbone.swin.layernorm.bias", "backbone.swin.layernorm.weight"] if parity["kind"] == "swin" else []
    assert parity["unmapped"] == expected


# ------------------------------------------------------------------------- a small model for the rest
def small_cfg(num_classes: int = 5, **overrides) -> dict:
    cfg = dict(
        backbone=dict(type="swin_t", drop_path_rate=0.0),
        decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], channels=32, num_classes=num_classes,
                         norm="BN", loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0)),
        auxiliary_head=dict(type="FCNHead", in_channels=384, in_index=2, channels=16, num_classes=num_classes,
                            norm="BN", loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)),
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return EncoderDecoder(**small_cfg()).eval()


def _image(h: int, w: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _predict(model: EncoderDecoder, x: torch.Tensor, test_cfg: dict, samples=None) -> list[SegDataSample]:
    saved = model.test_cfg
    model.test_cfg = test_cfg
    try:
        with torch.no_grad():
            return model.predict(x, samples)
    finally:
        model.test_cfg = saved


def test_slide_equals_whole_on_an_image_smaller_than_the_crop(small):
    x = _image(100, 150)
    whole = _predict(small, x, dict(mode="whole"))[0]
    slide = _predict(small, x, dict(mode="slide", crop_size=(512, 512), stride=(341, 341)))[0]
    assert slide.pred_sem_seg.shape == whole.pred_sem_seg.shape == (100, 150)
    assert torch.equal(slide.pred_sem_seg.data, whole.pred_sem_seg.data)
    torch.testing.assert_close(slide.seg_logits.data, whole.seg_logits.data)


def test_slide_on_an_image_larger_than_the_crop(small):
    x = _image(100, 150)
    samples = [SegDataSample(metainfo=dict(img_shape=(100, 150), ori_shape=(100, 150)))]
    out = _predict(small, x, dict(mode="slide", crop_size=(64, 64), stride=(43, 43)), samples)[0]
    assert out.pred_sem_seg.shape == (100, 150) and out.seg_logits.data.shape == (5, 100, 150)
    assert torch.isfinite(out.seg_logits.data).all()
    # Every pixel is covered: the top-left window alone gives the logits where no other window reaches.
    with torch.no_grad():
        corner = small.encode_decode(x[..., :64, :64])[0, :, :36, :43]  # next windows start at y=36, x=43
    torch.testing.assert_close(out.seg_logits.data[:, :36, :43], corner)


def test_tta_returns_original_size_probabilities(small):
    x = _image(64, 96)
    tta = dict(mode="whole", tta=dict(scales=[0.5, 1.0, 1.75], flip=True))
    out = _predict(small, x, tta)[0]
    probs = out.seg_logits.data
    assert out.pred_sem_seg.shape == (64, 96) and probs.shape == (5, 64, 96)
    assert probs.min() >= 0
    torch.testing.assert_close(probs.sum(0), torch.ones(64, 96))
    assert torch.equal(out.pred_sem_seg.data, probs.argmax(0, keepdim=True))
    # One scale without flips is the softmax of plain whole inference.
    single = _predict(small, x, dict(mode="whole", tta=dict(scales=[1.0], flip=False)))[0]
    whole = _predict(small, x, dict(mode="whole"))[0]
    torch.testing.assert_close(single.seg_logits.data, whole.seg_logits.data.softmax(0))


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    """mmseg's sliding grid along one axis: a window every ``stride`` pixels, the last one moved back so it ends on
    the border (a ragged border is covered by a window that overlaps its neighbour more)."""
    if size <= crop:
        return [0]
    return list(range(0, size - crop, stride)) + [size - crop]


def _whole_logits(model: EncoderDecoder, x: torch.Tensor) -> torch.Tensor:
    """``(K, H, W)`` logits of whole-image prediction on ``x`` ``(1, 3, H, W)``."""
    return _predict(model, x, dict(mode="whole"))[0].seg_logits.data


def test_slide_averages_overlapping_windows_like_an_independent_loop(small):
    # 100 x 160 with 64-pixel crops every 43 pixels: rows start at 0, 36; columns at 0, 43, 86, 96 (ragged border),
    # so pixels are covered by one to six windows and a sum without the division would be off.
    x = _image(100, 160, seed=5)
    crop, stride = 64, 43
    total, count = torch.zeros(5, 100, 160), torch.zeros(1, 100, 160)
    for y in _window_starts(100, crop, stride):
        for x0 in _window_starts(160, crop, stride):
            total[:, y:y + crop, x0:x0 + crop] += _whole_logits(small, x[..., y:y + crop, x0:x0 + crop])
            count[:, y:y + crop, x0:x0 + crop] += 1
    assert count.min() == 1 and count.max() == 6
    expected = total / count
    out = _predict(small, x, dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride)))[0]
    torch.testing.assert_close(out.seg_logits.data, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(out.pred_sem_seg.data, expected.argmax(0, keepdim=True))


def test_tta_averages_hand_made_flips_and_scales(small):
    # An image without left-right symmetry and a random network: a flipped view that is not flipped back differs.
    x = _image(64, 96, seed=7)
    scales = [0.5, 1.0, 1.5]
    probs = []
    for scale in scales:
        scaled = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        plain = _whole_logits(small, scaled)
        unflipped = _whole_logits(small, torch.flip(scaled, dims=[3])).flip(-1)
        for logits in (plain, unflipped):
            resized = F.interpolate(logits[None], size=(64, 96), mode="bilinear", align_corners=False)[0]
            probs.append(resized.softmax(0))
    expected = torch.stack(probs).mean(0)
    out = _predict(small, x, dict(mode="whole", tta=dict(scales=scales, flip=True)))[0]
    torch.testing.assert_close(out.seg_logits.data, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(out.pred_sem_seg.data, expected.argmax(0, keepdim=True))


def _labelled_samples(shapes, num_classes: int = 5) -> list[SegDataSample]:
    gen = torch.Generator().manual_seed(3)
    samples = []
    for h, w in shapes:
        labels = torch.randint(0, num_classes, (1, h, w), generator=gen)
        labels[:, :4] = 255  # ignored rows
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return samples


def test_loss_returns_decode_and_aux_losses_with_gradients(small):
    model = copy.deepcopy(small).eval()  # eval: deterministic dropout, so the aux weight can be checked
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    samples = _labelled_samples([(64, 96)] * 2)
    losses = model(x, samples, mode="loss")
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(losses)
    assert all(losses[k].requires_grad and torch.isfinite(losses[k]) for k in ("decode.loss_ce", "aux.loss_ce"))
    labels = torch.cat([s.gt_sem_seg.data for s in samples])
    with torch.no_grad():
        aux = model.auxiliary_head(model.extract_feat(x))
        aux = F.interpolate(aux, size=(64, 96), mode="bilinear", align_corners=False)
    # mmseg's default (avg_non_ignore=False): the sum over the counted pixels divided by all pixels.
    expected = 0.4 * F.cross_entropy(aux, labels, ignore_index=255, reduction="sum") / labels.numel()
    torch.testing.assert_close(losses["aux.loss_ce"].detach(), expected)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    for part in (model.backbone, model.decode_head, model.auxiliary_head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_train_step_through_the_preprocessor(small):
    """What mmengine's Runner calls: uint8 images of different sizes, padded, labels padded with 255."""
    model = copy.deepcopy(small).train()
    shapes = [(60, 90), (70, 64)]
    gen = torch.Generator().manual_seed(5)
    data = dict(inputs=[torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes],
                data_samples=_labelled_samples(shapes))
    log_vars = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert {"loss", "decode.loss_ce", "aux.loss_ce"} <= set(log_vars)
    assert torch.isfinite(torch.as_tensor(log_vars["loss"])).all()


def test_a_list_of_losses_trains_a_step(small):
    """``loss_decode`` as a list (mmseg configs): one log key per loss_name, all in the step's total loss."""
    cfg = small_cfg()
    cfg["decode_head"]["loss_decode"] = [dict(type="CrossEntropyLoss", loss_weight=1.0),
                                         dict(type="LovaszLoss", reduction="none", loss_weight=0.5)]
    cfg["auxiliary_head"]["loss_decode"] = [dict(type="CrossEntropyLoss", loss_weight=0.4, avg_non_ignore=True),
                                            dict(type="DiceLoss", loss_weight=0.2)]
    model = EncoderDecoder(**cfg).train()
    model.load_state_dict(small.state_dict())
    shapes = [(64, 64), (64, 64)]
    gen = torch.Generator().manual_seed(5)
    data = dict(inputs=[torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in shapes],
                data_samples=_labelled_samples(shapes))
    before = model.decode_head.conv_seg.weight.detach().clone()
    log_vars = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    keys = {"decode.loss_ce", "decode.loss_lovasz", "aux.loss_ce", "aux.loss_dice"}
    assert keys <= set(log_vars) and {"decode.acc_seg", "aux.acc_seg"} <= set(log_vars)
    values = {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
    assert values["loss"] == pytest.approx(sum(values[k] for k in keys), rel=1e-5)
    assert not torch.equal(before, model.decode_head.conv_seg.weight)


def test_a_one_class_head_trains_with_sigmoid_and_predicts_by_threshold():
    """mmseg's binary path: num_classes=1, use_sigmoid=True; prediction is sigmoid > 0.3 (mmseg's threshold)."""
    cfg = small_cfg(num_classes=1, backbone=dict(type="resnet18"), auxiliary_head=None)
    cfg["decode_head"].update(in_channels=[64, 128, 256, 512],
                              loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, avg_non_ignore=True))
    torch.manual_seed(0)
    model = EncoderDecoder(**cfg)
    samples = _labelled_samples([(32, 32), (32, 32)], num_classes=2)  # two: BN in the 1x1 pooling branch
    losses = model(torch.randn(2, 3, 32, 32), samples, mode="loss")
    assert set(losses) == {"decode.loss_ce", "decode.acc_seg"} and losses["decode.loss_ce"] > 0
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.predict(x)[0]
        logits = model.encode_decode(x)[0, 0]
    assert torch.equal(out.pred_sem_seg.data[0], (logits.sigmoid() > 0.3).long())
    with pytest.raises(ValueError, match="needs use_sigmoid=True"):
        EncoderDecoder(**small_cfg(num_classes=1))


def test_head_ignore_index_is_mmsegs_head_key():
    cfg = small_cfg(backbone=dict(type="resnet18"), auxiliary_head=None)
    cfg["decode_head"].update(in_channels=[64, 128, 256, 512], ignore_index=0)
    assert EncoderDecoder(**cfg).decode_loss.ignore_index == 0
    cfg["decode_head"]["loss_decode"] = dict(type="NoSuchLoss")
    with pytest.raises(ValueError, match=r"decode_head\.loss_decode\.type='NoSuchLoss'"):
        EncoderDecoder(**cfg)


def test_in_channels_mismatch_names_the_head_and_both_channel_lists():
    resnet = dict(type="resnet18")  # out_channels [64, 128, 256, 512]
    cfg = small_cfg(backbone=resnet)
    cfg["decode_head"]["in_channels"] = [64, 128, 256, 1024]
    with pytest.raises(ValueError, match=r"decode_head \(UPerHead\).*\[64, 128, 256, 1024\].*\[64, 128, 256, 512\]"):
        EncoderDecoder(**cfg)
    cfg = small_cfg(backbone=resnet)
    cfg["decode_head"]["in_channels"] = [64, 128, 256, 512]
    with pytest.raises(ValueError, match=r"auxiliary_head \(FCNHead\).*in_channels=384.*\[64, 128, 256, 512\]"):
        EncoderDecoder(**cfg)
    cfg["decode_head"].update(in_channels=[128, 256, 512], in_index=[1, 2, 3])
    cfg["auxiliary_head"]["in_channels"] = 256
    assert EncoderDecoder(**cfg).num_classes == 5  # levels picked by in_index are checked, not the first ones


def test_predict_restores_ori_shape_after_a_resize_and_padding(small):
    x = _image(48, 72)
    padded = F.pad(x, (0, 24, 0, 16))  # what the preprocessor's size_divisor adds, right and bottom
    samples = [SegDataSample(metainfo=dict(img_shape=(48, 72), ori_shape=(90, 135)))]
    out = _predict(small, padded, dict(mode="whole"), samples)[0]
    assert out.pred_sem_seg.shape == (90, 135) and out.seg_logits.data.shape == (5, 90, 135)
    with torch.no_grad():
        logits = small.inference(padded)[..., :48, :72]
    expected = F.interpolate(logits, size=(90, 135), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out.seg_logits.data, expected)


def test_test_step_with_a_resizing_pipeline_returns_the_original_size(small):
    pipeline = Compose([TRANSFORMS.build(dict(type="Resize", scale=(64, 48), keep_ratio=True)),
                        TRANSFORMS.build(dict(type="PackSegInputs"))])
    img = np.random.default_rng(0).integers(0, 256, (90, 135, 3), dtype=np.uint8)
    item = pipeline(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], img_path=None))
    assert item["data_samples"].img_shape != item["data_samples"].ori_shape
    out = small.test_step(pseudo_collate([item]))[0]
    assert out.pred_sem_seg.shape == (90, 135)


@pytest.mark.parametrize("test_cfg, message", [
    (dict(mode="sliding"), "must be 'whole' or 'slide'"),
    (dict(mode="slide", crop_size=(512, 512)), "needs crop_size=.* and stride"),
    (dict(mode="whole", tta=dict(flip=True)), "tta needs scales"),
])
def test_bad_test_cfg_fails_at_construction(test_cfg, message):
    cfg = small_cfg(backbone=dict(type="resnet18"), test_cfg=test_cfg, auxiliary_head=None)
    cfg["decode_head"]["in_channels"] = [64, 128, 256, 512]
    with pytest.raises(ValueError, match=message):
        EncoderDecoder(**cfg)
