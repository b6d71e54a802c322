"""The ``swin_unet_volume`` suite's parts: the official loop and the fit that makes the labels organs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import volume as bench_volume
from benchmarks.harness import model_flops
from densekit.inference.volume import infer_volume


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


def test_slice_flops_counts_the_inference_path_as_the_autograd_path():
    model = bench_volume.build_swin_unet(0)
    x = torch.zeros(1, 1, *bench_volume.INPUT_SIZE)
    reference = model_flops(lambda: model(x, mode="tensor"))  # autograd on: aten matmuls and convolutions
    assert bench_volume.slice_flops(model) == reference > 10e9  # Swin-Unet-T at 224: ~12 GFLOP


def test_compute_floor_times_the_volume_flops_at_the_measured_matmul_rates(monkeypatch):
    rates = {torch.float32: 100e9, torch.bfloat16: 400e9}
    monkeypatch.setattr(bench_volume, "gemm_rate", lambda dtype=torch.float32: rates[dtype])
    floor = bench_volume.compute_floor(int(10e9), 100, {"official loop (zoom)": 20.0, "densekit bf16": 5.0})
    assert floor.figures["fp32_floor_ms"] == pytest.approx(10_000)  # 1000 GFLOP at 100 GFLOP/s
    assert floor.figures["bf16_floor_ms"] == pytest.approx(2_500)
    assert "official loop (zoom) 50.0 GFLOP/s = 50% of the fp32 rate" in floor.text
    assert "densekit bf16 200.0 GFLOP/s = 50% of the bf16 rate" in floor.text
