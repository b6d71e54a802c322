"""IoUMetric against hand-computed mmsegmentation definitions, option by option (issue 20, tests that bite).

mmseg's ``total_area_to_metrics``, per class c with intersection I, union U, predicted area P, label area L:
IoU = I / U, Acc = Recall = I / L, Precision = I / P, Dice = 2I / (P + L),
F-beta = (1 + beta^2) * Precision * Recall / (beta^2 * Precision + Recall); aAcc = sum(I) / sum(L);
m<metric> is the mean over the classes whose value is not NaN (0/0, a class absent from labels and predictions).
"""
from __future__ import annotations

import logging
import warnings

import cv2
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.structures import PixelData

from densekit.evaluation import IoUMetric, intersect_and_union, total_area_to_metrics
from densekit.evaluation.seg_metric import _divide, format_class_table
from densekit.structures import SegDataSample

CLASSES = ("a", "b", "c", "d")

# 2x4 maps, 3 labelled classes (a, b, c), d absent everywhere, one ignored pixel (255, predicted b).
# Valid (label, pred) pairs: (0,0) (0,1) (1,1) (1,1) (0,2) (2,2) (2,0).
LABEL = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 2, 0, 1]])
# per class:          a    b    c    d
INTER = np.array([1, 2, 1, 0])
UNION = np.array([4, 3, 3, 0])
AREA_PRED = np.array([2, 3, 2, 0])
AREA_LABEL = np.array([3, 2, 2, 0])
IOU = [1 / 4, 2 / 3, 1 / 3]
ACC = [1 / 3, 1.0, 1 / 2]  # = recall
PRECISION = [1 / 2, 2 / 3, 1 / 2]
DICE = [2 / 5, 4 / 5, 2 / 4]
F2 = [5 * (1 / 2 * 1 / 3) / (4 / 2 + 1 / 3), 5 * (2 / 3) / (4 * 2 / 3 + 1), 1 / 2]  # beta = 2: 5PR / (4P + R)
F_HALF = [1.25 * (1 / 2 * 1 / 3) / (0.25 / 2 + 1 / 3), 1.25 * (2 / 3) / (0.25 * 2 / 3 + 1), 1 / 2]  # beta = 0.5


def _sample(pred: np.ndarray, label: np.ndarray) -> SegDataSample:
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred[None]).long())
    sample.gt_sem_seg = PixelData(data=torch.from_numpy(label[None]).long())
    return sample


def _evaluate(pred: np.ndarray = PRED, label: np.ndarray = LABEL, classes=CLASSES, **kwargs) -> dict:
    metric = IoUMetric(**kwargs)
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, [_sample(pred, label)])
    return metric.evaluate(size=1)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _assert_close(got, want):
    """Element-wise equality to 1e-12, NaN == NaN."""
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=0, atol=1e-12)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def log_messages():
    """Messages that reach mmengine's current logger (where ``print_log(..., logger='current')`` writes)."""
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------------------------------ intersect_and_union
def test_hand_counts_of_the_fixture_maps():
    """The four per-class counts of LABEL/PRED, counted by hand above, with the default ignore_index 255."""
    counts = intersect_and_union(torch.from_numpy(PRED), torch.from_numpy(LABEL), 4)  # ignore_index left default
    for got, want in zip(counts, (INTER, UNION, AREA_PRED, AREA_LABEL)):
        assert got.tolist() == want.tolist()


def test_value_equal_to_num_classes_counts_in_no_class():
    """A prediction or label equal to num_classes (one past the last class) is out of range: counts stay (K,)."""
    inter, union, area_pred, area_label = intersect_and_union(torch.tensor([0, 3, 1]), torch.tensor([0, 1, 3]), 3)
    assert area_pred.tolist() == [1, 1, 0] and area_label.tolist() == [1, 1, 0]
    assert inter.tolist() == [1, 0, 0] and union.tolist() == [1, 2, 0]


def test_shape_mismatch_message_says_predictions_must_be_at_label_size():
    with pytest.raises(ValueError, match=r"\(2, 3\) and label \(3, 2\) differ in shape; predictions must be at "
                                         r"the label's \(original image\) size"):
        intersect_and_union(torch.zeros(2, 3), torch.zeros(3, 2), 3)


# ------------------------------------------------------------------------------------ _divide
def test_divide_gives_inf_and_nan_without_warnings():
    """x/0 = inf and 0/0 = NaN, silently (numpy would otherwise warn on every evaluation with an absent class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _divide(np.array([1, 0, 3]), np.array([0, 0, 4]))
    assert out.dtype == np.float64
    assert out[0] == np.inf and np.isnan(out[1]) and out[2] == 0.75


# ------------------------------------------------------------------------------------ total_area_to_metrics
def test_all_metrics_match_hand_definitions_with_nan_for_the_absent_class():
    out = total_area_to_metrics(INTER, UNION, AREA_PRED, AREA_LABEL, metrics=["mIoU", "mDice", "mFscore"])
    assert set(out) == {"aAcc", "IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"}
    assert isinstance(out["aAcc"], float) and out["aAcc"] == pytest.approx(4 / 7, abs=1e-12)
    nan = float("nan")
    _assert_close(out["IoU"], [*IOU, nan])
    _assert_close(out["Acc"], [*ACC, nan])
    _assert_close(out["Dice"], [*DICE, nan])
    _assert_close(out["Precision"], [*PRECISION, nan])
    _assert_close(out["Recall"], [*ACC, nan])
    _assert_close(out["Fscore"], [*DICE, nan])  # beta defaults to 1: F1 = Dice, although precision != recall


def test_mdice_alone_as_a_string_gives_dice_and_acc_only():
    out = total_area_to_metrics(INTER, UNION, AREA_PRED, AREA_LABEL, metrics="mDice")
    assert set(out) == {"aAcc", "Dice", "Acc"}
    _assert_close(out["Dice"][:3], DICE)
    _assert_close(out["Acc"][:3], ACC)


@pytest.mark.parametrize("beta, want", [(2.0, F2), (0.5, F_HALF)])
def test_fscore_uses_beta_squared(beta, want):
    out = total_area_to_metrics(INTER, UNION, AREA_PRED, AREA_LABEL, metrics=["mFscore"], beta=beta)
    assert set(out) == {"aAcc", "Fscore", "Precision", "Recall"}
    _assert_close(out["Fscore"][:3], want)
    assert np.isnan(out["Fscore"][3])


def test_nan_to_num_replaces_nan_by_the_given_value_in_arrays_and_aacc():
    out = total_area_to_metrics(INTER, UNION, AREA_PRED, AREA_LABEL, metrics=["mIoU", "mFscore"], nan_to_num=-1)
    _assert_close(out["IoU"], [*IOU, -1])
    _assert_close(out["Fscore"], [*DICE, -1])
    zeros = np.zeros(3, np.int64)  # nothing labelled at all: aAcc = 0/0
    out = total_area_to_metrics(zeros, zeros, zeros, zeros, nan_to_num=0.5)
    assert out["aAcc"] == 0.5 and out["IoU"].tolist() == [0.5] * 3


def test_all_zero_counts_give_nan_without_warnings():
    zeros = torch.zeros(3, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = total_area_to_metrics(zeros, zeros, zeros, zeros, metrics=["mIoU", "mDice", "mFscore"])
    assert all(np.isnan(v).all() for v in out.values())


def test_float32_histograms_are_summed_in_float64():
    """mmseg's float32 count tensors are accepted; sums are taken in float64 (2**24 + 1 is not a float32)."""
    inter = torch.tensor([0.0, 1.0])
    label = torch.tensor([2.0**24, 1.0])
    out = total_area_to_metrics(inter, label, label, label)
    assert out["aAcc"] == 1 / (2**24 + 1)
    out = total_area_to_metrics(inter, label, label, label, metrics=["mDice"])
    assert out["Dice"][1] == 1.0


def test_unknown_metric_message_names_it():
    with pytest.raises(KeyError, match=r"metrics \['mAP'\] are not supported"):
        total_area_to_metrics(INTER, UNION, AREA_PRED, AREA_LABEL, metrics=["mIoU", "mAP"])


# ------------------------------------------------------------------------------------ format_class_table
def test_class_table_layout_exactly():
    table = format_class_table(["background", "cat"], {"IoU": np.array([0.5, np.nan]), "Acc": np.array([1, 0.25])})
    assert table == "\n".join([
        "+------------+--------+--------+",
        "| Class      |    IoU |    Acc |",
        "+------------+--------+--------+",
        "| background | 0.5000 | 1.0000 |",
        "| cat        |    nan | 0.2500 |",
        "+------------+--------+--------+",
    ])


# ------------------------------------------------------------------------------------ IoUMetric
def test_metric_reports_all_means_of_the_hand_values():
    got = _evaluate(iou_metrics=["mIoU", "mDice", "mFscore"])
    want = dict(aAcc=4 / 7, mIoU=_mean(IOU), mAcc=_mean(ACC), mDice=_mean(DICE), mFscore=_mean(DICE),
                mPrecision=_mean(PRECISION), mRecall=_mean(ACC))
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_metric_accepts_one_metric_name_as_a_string_and_defaults_to_f1():
    got = _evaluate(iou_metrics="mFscore")
    assert set(got) == {"aAcc", "mFscore", "mPrecision", "mRecall"}
    assert got["mFscore"] == pytest.approx(_mean(DICE), abs=1e-12)


def test_metric_passes_beta_on():
    got = _evaluate(iou_metrics=["mFscore"], beta=2)
    assert got["mFscore"] == pytest.approx(_mean(F2), abs=1e-12)


def test_metric_passes_the_metric_list_on():
    got = _evaluate(iou_metrics=["mDice"])
    assert set(got) == {"aAcc", "mDice", "mAcc"}
    assert got["mDice"] == pytest.approx(_mean(DICE), abs=1e-12)


def test_metric_uses_its_ignore_index():
    """With ignore_index=3 the pixels labelled 3 are dropped, so the remaining perfect predictions give mIoU 1."""
    label = np.array([[0, 3], [1, 3]])
    pred = np.array([[0, 1], [1, 2]])
    got = _evaluate(pred, label, classes=("a", "b", "c"), ignore_index=3)
    assert got == dict(aAcc=1.0, mIoU=1.0, mAcc=1.0)


def test_metric_prefix_and_collect_device_reach_base_metric():
    got = _evaluate(prefix="val")
    assert set(got) == {"val/aAcc", "val/mIoU", "val/mAcc"}
    assert IoUMetric(collect_device="gpu").collect_device == "gpu"


def test_unknown_metric_is_refused_at_construction():
    with pytest.raises(KeyError, match=r"iou_metrics \['mAP'\] are not supported"):
        IoUMetric(iou_metrics=["mIoU", "mAP"])


def test_missing_classes_message_says_how_to_set_them():
    with pytest.raises(ValueError, match=r"^IoUMetric needs dataset_meta\['classes'\]; the Runner sets it from "
                                         r"the dataset's metainfo, or set metric\.dataset_meta = dict\(classes="):
        IoUMetric().process({}, [_sample(PRED, LABEL)])


def test_no_labelled_pixel_gives_nan_means_without_warnings():
    """Every pixel ignored: all counts 0, aAcc and the means are NaN (not an error, not a numpy warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _evaluate(PRED, np.full_like(LABEL, 255), iou_metrics=["mIoU", "mFscore"])
    assert set(got) == {"aAcc", "mIoU", "mAcc", "mFscore", "mPrecision", "mRecall"}
    assert all(np.isnan(v) for v in got.values())


def test_no_samples_gives_nan_means():
    metric = IoUMetric(iou_metrics=["mIoU", "mDice"])
    metric.dataset_meta = dict(classes=CLASSES)
    got = metric.evaluate(size=0)
    assert set(got) == {"aAcc", "mIoU", "mAcc", "mDice"}
    assert all(np.isnan(v) for v in got.values())


def test_per_class_table_is_logged_to_the_current_logger(log_messages):
    _evaluate()
    table = [m for m in log_messages if m.startswith("per class results:\n")]
    assert len(table) == 1
    assert table[0].splitlines()[4] == "| a     | 0.2500 | 0.3333 |"
    assert table[0].splitlines()[7].split() == ["|", "d", "|", "nan", "|", "nan", "|"]


def test_chart_uses_the_dataset_palette_and_its_path_is_logged(tmp_path, log_messages):
    metric = IoUMetric(output_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=("a", "b"), palette=[[255, 0, 255], [255, 0, 255]])  # magenta bars
    label = np.array([[0, 1], [0, 1]])
    metric.process({}, [_sample(label, label)])  # IoU 1 for both: two full-width bars
    metric.evaluate(size=1)
    chart = cv2.imread(str(tmp_path / "per_class_iou.png"))
    magenta = np.all(chart == (255, 0, 255), axis=-1).sum()
    assert magenta > 0.1 * chart.shape[0] * chart.shape[1]
    assert f"per-class IoU chart written to {tmp_path}/per_class_iou.png" in log_messages
