"""IoUMetric reproduces mmseg 1.x's IoUMetric and agrees with a direct confusion-matrix computation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData

from densekit.evaluation import IoUMetric, intersect_and_union, total_area_to_metrics
from densekit.evaluation.seg_metric import format_class_table
from densekit.registry import METRICS
from densekit.structures import SegDataSample

CLASSES = ("a", "b", "c", "d", "e")


def _sample(pred: np.ndarray, label: np.ndarray) -> SegDataSample:
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred[None]).long())
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None]).long())
    return sample


def _metric(**kwargs) -> IoUMetric:
    metric = IoUMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


def _confusion_reference(preds: list[np.ndarray], labels: list[np.ndarray], k: int) -> dict[str, float]:
    """mIoU/mAcc/aAcc from one confusion matrix built with np.bincount over all valid pixels."""
    pred = np.concatenate([p.ravel() for p in preds])
    label = np.concatenate([lb.ravel() for lb in labels])
    valid = label != 255
    conf = np.bincount(label[valid] * k + pred[valid], minlength=k * k).reshape(k, k).astype(np.float64)
    tp = np.diag(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (conf.sum(0) + conf.sum(1) - tp)
        acc = tp / conf.sum(1)
    return dict(aAcc=tp.sum() / conf.sum(), mIoU=np.nanmean(iou), mAcc=np.nanmean(acc), iou=iou)


def test_metric_matches_confusion_matrix_with_ignore_pixels():
    rng = np.random.default_rng(0)
    preds, labels = [], []
    for shape in [(37, 53), (64, 48), (20, 90)]:  # different sizes: counts are summed, not averaged per image
        label = rng.integers(0, len(CLASSES), shape)
        label[rng.random(shape) < 0.2] = 255
        pred = np.where(rng.random(shape) < 0.6, np.where(label == 255, 0, label), rng.integers(0, 5, shape))
        preds.append(pred)
        labels.append(label)
    metric = _metric()
    metric.process({}, [_sample(p, lb) for p, lb in zip(preds, labels)])
    got = metric.evaluate(size=len(preds))
    ref = _confusion_reference(preds, labels, len(CLASSES))
    assert set(got) == {"aAcc", "mIoU", "mAcc"}
    for key in ("aAcc", "mIoU", "mAcc"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
        assert 0.0 <= got[key] <= 1.0


def test_absent_class_is_nan_and_excluded_from_the_mean():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 0, 1, 2], [0, 1, 1, 3]])  # class 2 predicted, never labelled -> IoU 0; 4 absent -> NaN
    areas = intersect_and_union(torch.from_numpy(pred), torch.from_numpy(label), 5, 255)
    per_class = total_area_to_metrics(*areas)
    iou = per_class["IoU"]
    assert iou[:3] == pytest.approx([3 / 4, 2 / 4, 0.0])
    assert np.isnan(iou[3]) and np.isnan(iou[4])  # 3 only predicted on an ignored pixel: absent
    metric = _metric()
    metric.process({}, [_sample(pred, label)])
    assert metric.evaluate(1)["mIoU"] == pytest.approx((3 / 4 + 2 / 4 + 0.0) / 3)
    metric = _metric(nan_to_num=0)
    metric.process({}, [_sample(pred, label)])
    assert metric.evaluate(1)["mIoU"] == pytest.approx((3 / 4 + 2 / 4) / 5)


def test_intersect_and_union_counts_are_exact_and_ignore_out_of_range():
    pred = torch.tensor([0, 1, 1, 7, 2])
    label = torch.tensor([0, 1, 2, 2, 255])
    inter, union, area_pred, area_label = intersect_and_union(pred, label, 3, 255)
    assert inter.dtype == torch.int64
    assert inter.tolist() == [1, 1, 0] and area_pred.tolist() == [1, 2, 0] and area_label.tolist() == [1, 1, 2]
    assert union.tolist() == [1, 2, 2]
    with pytest.raises(ValueError, match="differ in shape"):
        intersect_and_union(torch.zeros(2, 3), torch.zeros(3, 2), 3, 255)


def test_dice_and_fscore_options():
    inter, union, pred, label = (np.array(v) for v in ([2, 1], [4, 3], [3, 2], [3, 2]))
    out = total_area_to_metrics(inter, union, pred, label, metrics=["mIoU", "mDice", "mFscore"])
    assert out["Dice"] == pytest.approx([4 / 6, 2 / 4])
    assert out["Fscore"] == pytest.approx(out["Dice"])  # F1 == Dice
    with pytest.raises(KeyError):
        total_area_to_metrics(inter, union, pred, label, metrics=["mAP"])


def test_runs_inside_mmengine_evaluator_with_dict_samples():
    metric = METRICS.build(dict(type="IoUMetric"))
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = dict(classes=CLASSES)
    label = np.arange(20).reshape(4, 5) % 5
    evaluator.process([_sample(label, label)])  # the evaluator hands the metric dicts (to_dict())
    result = evaluator.evaluate(1)
    assert result["mIoU"] == 1.0 and result["aAcc"] == 1.0


def test_class_table_lists_every_class():
    table = format_class_table(CLASSES, {"IoU": np.array([0.5, np.nan, 1, 0, 0.25]), "Acc": np.ones(5)})
    lines = table.splitlines()
    assert len(lines) == 5 + 4 and "| Class |" in lines[1].replace("  ", " ")
    assert "nan" in lines[4] and "0.5000" in lines[3]


def test_missing_class_names_are_reported():
    metric = IoUMetric()
    with pytest.raises(ValueError, match="classes"):
        metric.process({}, [_sample(np.zeros((2, 2), int), np.zeros((2, 2), int))])


def test_per_class_iou_keys_and_chart(tmp_path):
    label = np.repeat(np.arange(4), 10).reshape(4, 10)  # classes a..d, e absent: NaN, left out of the keys
    pred = label.copy()
    pred[0, :5] = 1  # half of class a predicted as b: IoU(a) = 5/10, IoU(b) = 10/15
    metric = _metric(per_class=True, output_dir=str(tmp_path / "pics"))
    metric.process({}, [_sample(pred, label)])
    got = metric.evaluate(size=1)
    assert got["IoU.a"] == pytest.approx(0.5) and got["IoU.b"] == pytest.approx(10 / 15)
    assert got["IoU.c"] == got["IoU.d"] == 1.0 and "IoU.e" not in got
    chart = cv2.imread(str(tmp_path / "pics" / "per_class_iou.png"))
    assert chart is not None and chart.shape[1] == 700 and chart.shape[0] == round(100 * (1.2 + 0.22 * 5))
    assert [p.name for p in (tmp_path / "pics").iterdir()] == ["per_class_iou.png"]  # no temporary file left
