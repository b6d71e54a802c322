"""BaseSegmentor's inference contract on a tiny hand-written segmentor, checked against references written here.

``ToySegmentor.encode_decode`` is ``toy_logits``: each pixel's first ``K`` input channels plus the mean of the
whole (cropped, scaled) input and a term in its height. So a window, a flip or a scale that is cut, weighted,
undone or resized wrongly changes the numbers. The references follow mmseg's definitions: the sliding grid of
``EncoderDecoder.slide_inference`` (windows every ``stride`` pixels, the last moved back onto the border,
overlaps averaged), ``SegTTAModel`` (probabilities averaged over scales and flips, flipped views flipped back)
and ``postprocess_result`` (crop the padding, undo a pipeline flip, resize to ``ori_shape``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

from densekit.models.base_segmentor import BaseSegmentor, check_test_cfg, stack_labels
from densekit.structures import SegDataSample


def toy_logits(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, K, H, W)``: pixel value + the view's mean (context) + its height (resolution)."""
    return x[:, :num_classes] + x.mean(dim=(1, 2, 3), keepdim=True) + x.shape[-2] / 50


class ToySegmentor(BaseSegmentor):
    def __init__(self, num_classes: int = 3, test_cfg: dict | None = None, align_corners: bool = False):
        super().__init__()
        self.num_classes, self.align_corners = num_classes, align_corners
        self.test_cfg = {} if test_cfg is None else test_cfg

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        return toy_logits(inputs, self.num_classes)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * 2

    def loss(self, inputs, data_samples):
        return {"loss": inputs.sum()}


def _image(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ test_cfg checks
@pytest.mark.parametrize("test_cfg", [
    {},  # mode defaults to 'whole'
    dict(tta=dict(scales=[1.0])),
    dict(mode="slide", crop_size=(64, 64), stride=(32, 32)),
    dict(mode="slide", crop_size=(64, 64), stride=(32, 32), tta=dict(scales=[0.5, 1.0], flip=True)),
])
def test_valid_test_cfgs_pass_the_check(test_cfg):
    check_test_cfg(test_cfg)


@pytest.mark.parametrize("test_cfg, message", [
    (dict(mode="slide", stride=(32, 32)), r"mode='slide' needs crop_size=\(h, w\) and stride=\(h, w\), got .*stride"),
    (dict(mode="slide", crop_size=(64, 64)), r"mode='slide' needs crop_size=\(h, w\) and stride=\(h, w\)"),
    (dict(mode="slide"), "mode='slide' needs crop_size"),
    (dict(mode="Whole"), r"test_cfg\.mode must be 'whole' or 'slide', got 'Whole'"),
    (dict(tta=dict(flip=True)), r"test_cfg\.tta needs scales=\[\.\.\.\].*'flip': True"),
])
def test_invalid_test_cfgs_name_what_is_missing(test_cfg, message):
    with pytest.raises(ValueError, match=message):
        check_test_cfg(test_cfg)


# ------------------------------------------------------------------------------------------ forward modes
def test_forward_defaults_to_tensor_mode_and_passes_the_inputs():
    model = ToySegmentor()
    x = _image(1, 8, 8)
    torch.testing.assert_close(model(x), x * 2)
    torch.testing.assert_close(model(x, mode="tensor"), x * 2)


def test_forward_rejects_an_unknown_mode_by_name():
    with pytest.raises(ValueError, match=r"mode must be 'loss', 'predict' or 'tensor', got 'Tensor'"):
        ToySegmentor()(_image(1, 8, 8), mode="Tensor")


def test_inference_without_a_mode_is_whole_image_and_rejects_an_unknown_mode():
    x = _image(1, 8, 12)
    torch.testing.assert_close(ToySegmentor(test_cfg={}).inference(x), toy_logits(x, 3))
    with pytest.raises(ValueError, match=r"test_cfg\.mode must be 'whole' or 'slide', got 'sliding'"):
        ToySegmentor(test_cfg=dict(mode="sliding")).inference(x)


# ------------------------------------------------------------------------------------------ loss labels
def test_stack_labels_moves_labels_to_the_inputs_device_and_names_what_is_missing():
    samples = []
    for value in (1, 2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.full((1, 4, 5), value, dtype=torch.uint8))
        samples.append(sample)
    labels = stack_labels(samples, torch.device("meta"))
    assert labels.device.type == "meta" and labels.shape == (2, 4, 5) and labels.dtype == torch.long
    assert torch.equal(stack_labels(samples, torch.device("cpu"))[:, 0, 0], torch.tensor([1, 2]))
    for missing in (None, []):
        with pytest.raises(ValueError, match=r"^mode='loss' needs data_samples with gt_sem_seg$"):
            stack_labels(missing, torch.device("cpu"))


# ------------------------------------------------------------------------------------------ sliding window
@pytest.mark.parametrize("size, crop, stride, rows, cols", [
    # (h, w), crop, stride, window starts written out: h - crop a multiple of the stride (no extra window on the
    # border), w - crop one past a multiple (a last one-pixel-shifted window is needed).
    ((100, 65), (64, 64), (36, 43), [0, 36], [0, 1]),
    ((65, 100), (64, 64), (43, 36), [0, 1], [0, 36]),
    ((90, 90), (64, 64), (25, 27), [0, 25, 26], [0, 26]),  # 26 = 27 - 1 and 25 - 1: ragged by one less than stride
    ((40, 30), (64, 64), (32, 32), [0], [0]),  # smaller than the crop: one window, the whole image
])
def test_slide_inference_averages_mmsegs_windows(size, crop, stride, rows, cols):
    h, w = size
    x = _image(2, h, w, seed=1)
    total, count = torch.zeros(2, 3, h, w), torch.zeros(1, 1, h, w)
    for y in rows:
        for x0 in cols:
            window = x[:, :, y:y + crop[0], x0:x0 + crop[1]]
            total[:, :, y:y + crop[0], x0:x0 + crop[1]] += toy_logits(window, 3)
            count[:, :, y:y + crop[0], x0:x0 + crop[1]] += 1
    assert count.min() >= 1
    model = ToySegmentor(test_cfg=dict(mode="slide", crop_size=crop, stride=stride))
    out = model.inference(x)
    torch.testing.assert_close(out, total / count)


# ------------------------------------------------------------------------------------------ TTA
def _tta_reference(x: torch.Tensor, num_classes: int, scales, flip: bool, align_corners: bool) -> torch.Tensor:
    """mmseg's SegTTAModel over whole-image inference: mean of per-view probabilities at the input size."""
    probs = []
    for scale in scales:
        scaled = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align_corners)
        views = [toy_logits(scaled, num_classes)]
        if flip:
            views.append(toy_logits(scaled.flip(3), num_classes).flip(3))
        for logits in views:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=align_corners)
            probs.append(logits.softmax(1) if num_classes > 1 else logits.sigmoid())
    return torch.stack(probs).mean(0)


@pytest.mark.parametrize("num_classes", [1, 2, 3])
@pytest.mark.parametrize("align_corners", [False, True])
def test_tta_inference_matches_mmsegs_mean_of_probabilities(num_classes, align_corners):
    """Softmax for two or more classes, sigmoid for one; scale 2.0 is resized like any other; a batch of two."""
    x = _image(2, 12, 18, seed=2)
    scales = [0.5, 1.0, 2.0]
    model = ToySegmentor(num_classes, align_corners=align_corners)
    out = model.tta_inference(x, scales=scales, flip=True)
    assert out.shape == (2, num_classes, 12, 18)
    torch.testing.assert_close(out, _tta_reference(x, num_classes, scales, True, align_corners))


def test_predict_with_tta_on_a_one_class_head_thresholds_the_mean_probability():
    """Under TTA the averaged values are already probabilities: the label is ``p > 0.3`` (no second sigmoid)."""
    x = _image(1, 12, 18, seed=3) * 3
    model = ToySegmentor(1, test_cfg=dict(tta=dict(scales=[0.5, 1.0], flip=False)))
    out = model.predict(x)[0]
    probs = _tta_reference(x, 1, [0.5, 1.0], False, False)[0]
    torch.testing.assert_close(out.seg_logits.data, probs)
    assert 0 < (probs > 0.3).float().mean() < 1  # some pixels on each side of the threshold
    assert torch.equal(out.pred_sem_seg.data, (probs > 0.3).long())


def test_predict_with_tta_on_a_two_class_head_is_the_argmax_of_softmax_means():
    x = _image(1, 12, 18, seed=4)
    model = ToySegmentor(2, test_cfg=dict(tta=dict(scales=[1.0, 2.0], flip=True)))
    out = model.predict(x)[0]
    probs = _tta_reference(x, 2, [1.0, 2.0], True, False)[0]
    torch.testing.assert_close(out.seg_logits.data, probs)
    torch.testing.assert_close(out.seg_logits.data.sum(0), torch.ones(12, 18))
    assert torch.equal(out.pred_sem_seg.data, probs.argmax(0, keepdim=True))


# ------------------------------------------------------------------------------------------ post-processing
def test_predict_without_samples_makes_one_sample_per_image_with_its_shapes():
    x = _image(2, 10, 14, seed=5)  # two images of three channels: one sample per image, not per channel
    out = ToySegmentor().predict(x)
    assert len(out) == 2
    for i, sample in enumerate(out):
        assert tuple(sample.metainfo["img_shape"]) == (10, 14) and tuple(sample.metainfo["ori_shape"]) == (10, 14)
        torch.testing.assert_close(sample.seg_logits.data, toy_logits(x, 3)[i])


def test_predict_undoes_a_pipeline_flip_after_cropping_the_padding():
    """mmseg's postprocess_result: crop to img_shape first, then flip back horizontally (``flip_direction``
    'horizontal', the only one densekit's pipeline makes)."""
    x = F.pad(_image(1, 10, 14, seed=6), (0, 4, 0, 6))  # padded right and bottom to 16 x 18
    samples = [SegDataSample(metainfo=dict(img_shape=(10, 14), ori_shape=(10, 14), flip=True)),
               SegDataSample(metainfo=dict(img_shape=(10, 14), ori_shape=(10, 14), flip=False))]
    out = ToySegmentor().predict(torch.cat([x, x]), samples)
    logits = toy_logits(x, 3)[0, :, :10, :14]
    torch.testing.assert_close(out[0].seg_logits.data, logits.flip(2))
    torch.testing.assert_close(out[1].seg_logits.data, logits)
    assert torch.equal(out[0].pred_sem_seg.data, logits.flip(2).argmax(0, keepdim=True))


def test_predict_falls_back_to_the_input_size_and_accepts_three_element_shapes():
    """Without ``img_shape`` nothing is cropped, without ``ori_shape`` nothing is resized; ``(h, w, c)`` shapes
    (mmcv's older ``img.shape``) count by their first two entries."""
    x = _image(1, 10, 14, seed=7)
    logits = toy_logits(x, 3)[0]
    for metainfo in ({}, dict(img_shape=(10, 14)), dict(img_shape=(10, 14, 3), ori_shape=(10, 14, 3))):
        out = ToySegmentor().predict(x, [SegDataSample(metainfo=metainfo)])[0]
        torch.testing.assert_close(out.seg_logits.data, logits)
    out = ToySegmentor().predict(x, [SegDataSample(metainfo=dict(img_shape=(8, 12, 3), ori_shape=(16, 24, 3)))])[0]
    expected = F.interpolate(logits[None, :, :8, :12], size=(16, 24), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out.seg_logits.data, expected)


@pytest.mark.parametrize("align_corners", [False, True])
def test_predict_resizes_to_ori_shape_with_the_models_align_corners(align_corners):
    x = _image(1, 10, 14, seed=8)
    samples = [SegDataSample(metainfo=dict(img_shape=(10, 14), ori_shape=(25, 31)))]
    out = ToySegmentor(align_corners=align_corners).predict(x, samples)[0]
    expected = F.interpolate(toy_logits(x, 3), size=(25, 31), mode="bilinear", align_corners=align_corners)[0]
    torch.testing.assert_close(out.seg_logits.data, expected)
    assert torch.equal(out.pred_sem_seg.data, expected.argmax(0, keepdim=True))
