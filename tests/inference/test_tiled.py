"""Streamed sliding windows (``densekit.inference.tiled``) give the labels of the reference slide path.

The reference is ``BaseSegmentor.slide_inference`` through ``model.predict`` (mmseg's definition: the whole
normalised, padded image, a full-resolution map of summed logits and counts, the arg-max cropped to the image).
A random ResNet-18 UPerNet with a slim head keeps it fast; the images are larger than the crop and not multiples
of the stride or of the preprocessor's ``size_divisor``, so edge windows are moved back and padding is part of
edge tiles.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from densekit.inference.tiled import stream_slide_labels, streamable, tile_rows
from densekit.models import EncoderDecoder
from densekit.structures import SegDataSample


def slim_model(size_divisor: int | None = None, num_classes: int = 4) -> EncoderDecoder:
    torch.manual_seed(0)
    return EncoderDecoder(
        backbone=dict(type="resnet18"),
        decode_head=dict(type="UPerHead", in_channels=[64, 128, 256, 512], channels=16, num_classes=num_classes,
                         pool_scales=(1, 2)),
        data_preprocessor=dict(type="SegDataPreProcessor", size_divisor=size_divisor),
    ).eval()


def reference_labels(model: EncoderDecoder, image: np.ndarray, crop, stride) -> np.ndarray:
    """``model.predict`` in ``test_cfg.mode='slide'`` on the image, as ``inference_model`` runs it."""
    model.test_cfg = dict(mode="slide", crop_size=crop, stride=stride)
    shape = image.shape[:2]
    data = model.data_preprocessor(
        {"inputs": [torch.from_numpy(image).permute(2, 0, 1)],
         "data_samples": [SegDataSample(metainfo={"img_shape": shape, "ori_shape": shape})]}, False)
    with torch.no_grad():
        sample = model.predict(data["inputs"], data["data_samples"])[0]
    return sample.pred_sem_seg.data[0].numpy()


@pytest.mark.parametrize("size_divisor,crop,stride,shape", [
    (None, (64, 64), (48, 40), (150, 203)),   # overlapping windows, edges moved back
    (32, (64, 96), (64, 96), (137, 250)),     # no overlap, padded input
    (None, (96, 96), (64, 64), (80, 300)),    # the image is lower than the crop: one clipped row
])
def test_streamed_labels_equal_the_reference_slide_path(size_divisor, crop, stride, shape):
    model = slim_model(size_divisor)
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = reference_labels(model, image, crop, stride)
    got = stream_slide_labels(model, image, crop, stride, batch_size=1, progress=False)
    assert got.shape == shape and got.dtype == np.uint8
    assert len(np.unique(expected)) > 1  # labels that can differ
    np.testing.assert_array_equal(got, expected)


def test_batched_tiles_agree_with_one_at_a_time():
    model = slim_model()
    image = np.random.default_rng(1).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    one = stream_slide_labels(model, image, (64, 64), (48, 48), batch_size=1, progress=False)
    four = stream_slide_labels(model, image, (64, 64), (48, 48), batch_size=4, progress=False)
    assert (one == four).mean() >= 0.999


def test_tile_rows_cover_the_image_and_end_at_its_border():
    rows = tile_rows(150, 203, (64, 64), (48, 40))
    covered = np.zeros((150, 203), int)
    for row in rows:
        assert len({w[:2] for w in row}) == 1  # one band of rows per tile row
        for y1, y2, x1, x2 in row:
            assert (y2 - y1, x2 - x1) == (64, 64)
            covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1 and rows[-1][-1][1::2] == (150, 203)


def test_streamable_names_the_steps_that_resize():
    assert streamable([dict(type="LoadImageFromFile"), dict(type="PackSegInputs")]) is None
    reason = streamable([dict(type="LoadImageFromFile"), dict(type="Resize", scale=(2048, 512)),
                         dict(type="PackSegInputs")])
    assert reason is not None and "Resize" in reason
