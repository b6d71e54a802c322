"""Property tests (hypothesis): random image sizes from 1 to 1100 pixels per side through the segmentation
transforms, the Swin padding path, sliding-window inference and RPN proposals. Nothing may crash, and every
output has the promised shape. Models are tiny (8-12 channels) so the file runs in well under a minute."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mmengine.config import Config
from mmengine.registry import init_default_scope

from densekit.apis import inference_model
from densekit.backbones import SwinTransformer
from densekit.datasets.seg.transforms import Pad, RandomCrop, RandomFlip, RandomResize, Resize
from densekit.heads.rpn_head import RPNHead
from densekit.registry import MODELS

side = st.integers(min_value=1, max_value=1100)


def extremes(**other_args):
    """Always try the corners of the size range too (hypothesis's draws rarely reach 1100)."""
    def add(test):
        for h, w in ((1100, 1100), (1, 1100), (1100, 3)):
            test = example(h=h, w=w, **other_args)(test)
        return test
    return add
FEW = settings(max_examples=12, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _sample(h: int, w: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, 6, size=(h, w), dtype=np.uint8)
    return dict(img=img, gt_seg_map=seg, seg_fields=["gt_seg_map"], img_shape=(h, w), ori_shape=(h, w))


# ------------------------------------------------------------------------------------------ transforms
@settings(max_examples=40, deadline=None, derandomize=True)
@given(h=side, w=side, crop=st.tuples(st.integers(1, 600), st.integers(1, 600)), seed=st.integers(0, 2**16))
def test_transforms_keep_image_and_labels_aligned(h, w, crop, seed):
    np.random.seed(seed)
    results = _sample(h, w, seed)
    results = RandomResize(scale=(512, 512), ratio_range=(0.5, 2.0), keep_ratio=True)(results)
    rh, rw = results["img_shape"]
    assert rh >= 1 and rw >= 1 and results["gt_seg_map"].shape == (rh, rw)
    results = RandomCrop(crop_size=crop, cat_max_ratio=0.75)(results)
    ch, cw = min(rh, crop[0]), min(rw, crop[1])
    assert results["img"].shape == (ch, cw, 3) and results["gt_seg_map"].shape == (ch, cw)
    results = RandomFlip(prob=0.5)(results)
    results = Pad(size=(crop[1], crop[0]), seg_pad_val=255)(results)
    assert results["img"].shape == (crop[0], crop[1], 3) and results["gt_seg_map"].shape == crop
    assert results["img_shape"] == (ch, cw)  # the valid region stays known
    assert (results["gt_seg_map"][ch:] == 255).all() and (results["gt_seg_map"][:, cw:] == 255).all()
    assert results["gt_seg_map"][:ch, :cw].max() < 6  # padding never leaks into labels


@settings(max_examples=40, deadline=None, derandomize=True)
@given(h=side, w=side, short=st.integers(1, 1100))
def test_keep_ratio_resize_and_size_divisor_pad(h, w, short):
    results = Resize(scale=(4 * short, short), keep_ratio=True)(_sample(h, w, 0))
    rh, rw = results["img_shape"]
    assert min(rh, rw) <= short + 1 and max(rh, rw) <= 4 * short + 1  # within the (long, short) bound
    assert abs(rh / rw - h / w) <= max(h / w, 1) * 2 / min(rh, rw) + 1e-6  # the aspect ratio kept (to rounding)
    results = Pad(size=None, size_divisor=32)(results)
    assert results["img"].shape[:2] == (math.ceil(rh / 32) * 32, math.ceil(rw / 32) * 32)


# ------------------------------------------------------------------------------------------ Swin padding
@pytest.fixture(scope="module")
def tiny_swin():
    torch.manual_seed(0)
    return SwinTransformer(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7,
                           drop_path_rate=0.0).eval()


@FEW
@extremes()
@given(h=side, w=side)
def test_swin_any_size_gives_ceil_h_over_stride(tiny_swin, h, w):
    with torch.no_grad():
        feats = tiny_swin(torch.randn(1, 3, h, w))
    expected = [(1, c, math.ceil(h / s), math.ceil(w / s)) for c, s in zip(tiny_swin.out_channels, tiny_swin.strides)]
    assert [tuple(f.shape) for f in feats] == expected
    assert all(torch.isfinite(f).all() for f in feats)


# ------------------------------------------------------------------------------------------ sliding window
@pytest.fixture(scope="module")
def tiny_segmentor():
    init_default_scope("densekit")
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                               bgr_to_rgb=True, size_divisor=32),
        backbone=dict(type="test_convnext"),
        decode_head=dict(type="UPerHead", in_channels=[24, 32, 48, 64], pool_scales=(1, 2, 3, 6), channels=8,
                         num_classes=3, norm="BN"),
        test_cfg=dict(mode="slide", crop_size=(256, 256), stride=(192, 192)),
    )).eval()
    model.cfg = Config(dict(test_pipeline=[dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]))
    return model


@FEW
@extremes()
@given(h=side, w=side)
def test_slide_inference_predicts_at_the_image_size(tiny_segmentor, h, w):
    image = np.random.default_rng(h * 1101 + w).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    sample = inference_model(tiny_segmentor, image)
    assert tuple(sample.pred_sem_seg.data.shape) == (1, h, w)
    assert tuple(sample.seg_logits.data.shape) == (3, h, w)
    assert torch.isfinite(sample.seg_logits.data).all() and sample.pred_sem_seg.data.max() < 3


# ------------------------------------------------------------------------------------------ RPN proposals
@pytest.fixture(scope="module")
def tiny_rpn():
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, feat_channels=8, test_cfg=dict(nms_pre=200, max_per_img=50))
    with torch.no_grad():  # spread the scores and move the boxes, so that clipping and NMS have work to do
        head.rpn_cls.weight.normal_(0, 0.5)
        head.rpn_reg.weight.normal_(0, 0.5)
    return head.eval()


@FEW
@extremes(scale=1.5)
@given(h=side, w=side, scale=st.sampled_from([0.5, 1.0, 1.5]))
def test_rpn_proposals_lie_inside_the_image(tiny_rpn, h, w, scale):
    """An ``h x w`` original image resized by ``scale`` and padded to 32: features of the padded size per level
    (strides 4..64), boxes in original coordinates inside ``[0, w] x [0, h]``, at most ``max_per_img``."""
    rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
    ph, pw = math.ceil(rh / 32) * 32, math.ceil(rw / 32) * 32
    feats = [torch.randn(1, 8, math.ceil(ph / s), math.ceil(pw / s)) for s in (4, 8, 16, 32, 64)]
    meta = dict(img_shape=(rh, rw), scale_factor=(rw / w, rh / h))
    with torch.no_grad():
        cls, reg = tiny_rpn(feats)
        out = tiny_rpn.predict_by_feat(cls, reg, [meta])[0]
    boxes = out.bboxes
    assert boxes.shape[1:] == (4,) and 0 < len(boxes) <= 50
    assert torch.isfinite(boxes).all()
    tol = 1e-3 * max(h, w)
    assert (boxes[:, 0] >= -tol).all() and (boxes[:, 1] >= -tol).all()
    assert (boxes[:, 2] <= w + tol).all() and (boxes[:, 3] <= h + tol).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (out.scores[:-1] >= out.scores[1:]).all()  # sorted by score
