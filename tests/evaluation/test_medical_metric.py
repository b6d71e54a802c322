"""DSC / HD95: agreement with medpy, the two empty-mask protocols, and MedicalMetric's volume assembly and CSV."""
from __future__ import annotations

import csv
import json
import math
import socket

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from scipy import ndimage

from densekit.evaluation.medical_metric import MedicalMetric, case_metrics, dice, hd95, volume_metrics
from densekit.structures import SegDataSample

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _blob(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random mask (a few connected blobs, some touching the array border)."""
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    return field > np.quantile(field, rng.uniform(0.6, 0.95))


def test_dice_and_hd95_equal_medpy_with_anisotropic_spacing():
    worst_dice = worst_hd = 0.0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        shape = (10, 36, 30)
        pred, ref = _blob(rng, shape), _blob(rng, shape)
        spacing = (rng.uniform(1.5, 5.0), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        worst_dice = max(worst_dice, abs(dice(pred, ref) - medpy_binary.dc(pred, ref)))
        worst_hd = max(worst_hd, abs(hd95(pred, ref, spacing) - medpy_binary.hd95(pred, ref, voxelspacing=spacing)),
                       abs(hd95(ref, pred, spacing) - medpy_binary.hd95(ref, pred, voxelspacing=spacing)))
    assert worst_dice <= 1e-6 and worst_hd <= 1e-6, (worst_dice, worst_hd)


def test_hd95_small_structures_in_a_large_volume_equal_medpy():
    # The distance transform runs on the masks' bounding box: check that cropping changes nothing.
    pred = np.zeros((20, 64, 64), bool)
    ref = np.zeros_like(pred)
    pred[5:9, 10:20, 30:41] = True
    pred[0, 0, 0] = True  # a far outlier on the array corner
    ref[6:11, 12:22, 28:40] = True
    spacing = (3.0, 0.8, 0.7)
    assert hd95(pred, ref, spacing) == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), abs=1e-6)
    assert hd95(pred, ref) == pytest.approx(medpy_binary.hd95(pred, ref), abs=1e-6)


def test_densekit_protocol_empty_masks():
    empty, full = np.zeros((3, 8, 8), bool), np.zeros((3, 8, 8), bool)
    full[1, 2:5, 2:5] = True
    dsc, hd = case_metrics(empty, empty, (2.0, 1.0, 1.0))
    assert math.isnan(dsc) and math.isnan(hd)  # both empty: left out of the class mean
    assert case_metrics(full, empty, (2.0, 1.0, 1.0)) == (0.0, math.inf)  # hallucinated structure
    assert case_metrics(empty, full, (2.0, 1.0, 1.0)) == (0.0, math.inf)  # missed structure
    assert case_metrics(full, full, (2.0, 1.0, 1.0)) == (1.0, 0.0)


def _official_metric_percase(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``calculate_metric_percase`` of TransUNet / Swin-Unet ``utils.py``, with medpy."""
    pred, gt = pred.copy(), gt.copy()
    pred[pred > 0] = 1
    gt[gt > 0] = 1
    if pred.sum() > 0 and gt.sum() > 0:
        return medpy_binary.dc(pred, gt), medpy_binary.hd95(pred, gt)
    if pred.sum() > 0 and gt.sum() == 0:
        return 1, 0
    return 0, 0


def test_swin_unet_protocol_matches_the_official_function():
    empty, full = np.zeros((3, 8, 8), bool), np.zeros((3, 8, 8), bool)
    full[1, 2:5, 2:5] = True
    assert case_metrics(full, empty, protocol="swin-unet") == (1.0, 0.0)
    assert case_metrics(empty, full, protocol="swin-unet") == (0.0, 0.0)
    assert case_metrics(empty, empty, protocol="swin-unet") == (0.0, 0.0)
    rng = np.random.default_rng(3)
    shape = (8, 30, 30)
    pred = _blob(rng, shape) * 1 + _blob(rng, shape) * 2
    ref = np.where(_blob(rng, shape), 1, 0)
    ref[ref == 0] = np.where(_blob(rng, shape), 3, 0)[ref == 0]  # class 2 only predicted, 3 only labelled
    dsc, hd = volume_metrics(pred, ref, 4, spacing=(5.0, 1.0, 1.0), protocol="swin-unet")  # spacing ignored
    official = [_official_metric_percase(pred == c, ref == c) for c in range(1, 4)]
    np.testing.assert_allclose(dsc, [o[0] for o in official], atol=1e-6)
    np.testing.assert_allclose(hd, [o[1] for o in official], atol=1e-6)


def _slice_samples(case: str, pred: np.ndarray, gt: np.ndarray, spacing: tuple) -> list[SegDataSample]:
    samples = []
    for k in range(len(pred)):
        sample = SegDataSample(metainfo=dict(case_name=case, slice_index=k, num_slices=len(pred), spacing=spacing))
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred[k][None].astype(np.int64)))
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(gt[k][None].astype(np.int64)))
        samples.append(sample)
    return samples


def test_medical_metric_assembles_slices_prints_and_writes_csv(tmp_path):
    rng = np.random.default_rng(0)
    spacing = (2.5, 0.8, 0.8)
    cases = {}
    for name in ("case0002", "case0001"):
        gt = (_blob(rng, (6, 24, 24)) * 1 + _blob(rng, (6, 24, 24)) * 1).astype(np.int64)  # values 0..2
        pred = gt.copy()
        pred[:, :3] = 0
        cases[name] = (pred, gt)
    cases["case0001"][0][...] = 0  # nothing predicted: DSC 0, HD95 inf for the classes it has
    samples = [s for name, (p, g) in cases.items() for s in _slice_samples(name, p, g, spacing)]
    order = rng.permutation(len(samples))
    metric = MedicalMetric(output_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=("background", "liver", "tumour"))
    for i in order:  # slices arrive in any order, case by case or interleaved
        metric.process({}, [samples[i].to_dict()])
    assert not metric._pending and len(metric.results) == 2  # volumes scored as soon as complete
    out = metric.evaluate(len(samples))
    expected = {name: volume_metrics(p, g, 3, spacing) for name, (p, g) in cases.items()}
    assert [r["case"] for r in metric.last_rows] == ["case0001", "case0002"]
    np.testing.assert_allclose(metric.last_rows[1]["dsc"], expected["case0002"][0])
    assert out["DSC.liver"] == pytest.approx(np.nanmean([expected[c][0][0] for c in cases]))
    assert math.isinf(out["HD95.liver"])  # case0001 missed the liver
    assert set(out) == {"mDSC", "mHD95", "DSC.liver", "HD95.liver", "DSC.tumour", "HD95.tumour"}
    with open(tmp_path / "medical_metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0][:5] == ["case", "mean DSC", "mean HD95 (mm)", "DSC liver", "HD95 liver"]
    assert [r[0] for r in table[1:]] == ["case0001", "case0002", "mean"]
    assert float(table[2][3]) == pytest.approx(expected["case0002"][0][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medical_metrics.csv"]  # no temporary file left


def _split_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    gt = _blob(rng, (5, 20, 20)).astype(np.int64)
    return np.roll(gt, 2, axis=2), gt


def _evaluate_on_rank(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One rank of a gloo group: process this rank's share of the slices as mmengine's DefaultSampler deals them
    (``indices[rank::world_size]``, padded by repeating the first ones), then the metric's real ``evaluate()``
    (mmengine's collect_results and broadcast); each rank writes what it got back."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size)
    try:
        pred, gt = _split_case()
        samples = _slice_samples("case0007", pred, gt, (1.0, 1.0, 1.0))
        indices = list(range(len(samples)))
        indices += indices[: -len(indices) % world_size]  # 5 slices, 2 ranks: slice 0 is dealt twice
        metric = MedicalMetric(num_classes=2, protocol="swin-unet")
        for i in indices[rank::world_size]:
            metric.process({}, [samples[i].to_dict()])
        assert metric._pending and not metric.results, "each rank should hold only part of the case"
        out = metric.evaluate(len(samples))
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(out, f)
    finally:
        torch.distributed.destroy_process_group()


def test_medical_metric_merges_slices_split_across_ranks(tmp_path):
    """Two processes hold the slices of one case between them; MedicalMetric.evaluate() (not a copy of its hand-off)
    must assemble the whole volume on the main rank and broadcast the scores to both."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_evaluate_on_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    pred, gt = _split_case()
    dsc, hd = volume_metrics(pred, gt, 2, protocol="swin-unet")
    for rank in range(2):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert out["mDSC"] == pytest.approx(dsc[0]) and out["mHD95"] == pytest.approx(hd[0]), f"rank {rank}"


def test_medical_metric_rejects_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        MedicalMetric(protocol="nnunet")
