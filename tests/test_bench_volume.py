"""The ``swin_unet_volume`` suite's parts: the official loop and the fit that makes the labels organs."""
from __future__ import annotations

import numpy as np
import pytest

from densekit import bench_volume
from densekit.medical_inference import infer_volume


def test_fit_to_volume_trains_the_whole_model_and_leaves_it_in_eval_mode():
    model = bench_volume.build_swin_unet(0)
    volume, labels = bench_volume.synthetic_volume(4, 64, 64, seed=0)
    before = {name: p.clone() for name, p in model.named_parameters()}
    bench_volume.fit_to_volume(model, volume, labels, iters=2, batch=2)
    assert not model.training
    changed = [name for name, p in model.named_parameters() if not p.equal(before[name])]
    assert "decode_head.conv_seg.weight" in changed and any(n.startswith("backbone.") for n in changed)


def test_organ_dice_scores_the_organs_only():
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2, :2], truth[0, 2:, 2:] = 1, 2
    assert bench_volume.organ_dice(truth, truth) == 1.0
    assert bench_volume.organ_dice(np.zeros_like(truth), truth) == 0.0
    half = truth.copy()
    half[0, 2:, 2:] = 0
    assert bench_volume.organ_dice(half, truth) == pytest.approx(0.5)


def test_densekit_zoom_resize_gives_the_official_loop_labels():
    """Batched, torch-side zoom vs the per-slice scipy loop on the Swin-Unet: the same labels up to the
    float rounding of two matmul orders. Random weights label voxels with all 9 classes, boundaries everywhere:
    a harder comparison than a fitted model's few organs."""
    model = bench_volume.build_swin_unet(0)
    volume, _ = bench_volume.synthetic_volume(6, 64, 64, seed=0)
    official = bench_volume.official_volume_loop(model, volume)
    ours = infer_volume(model, volume, batch_size=4, progress=False, resize="zoom")
    assert len(np.unique(official)) == 9
    assert (ours == official).mean() > 0.999
