"""ProposalRecall equals pycocotools ``COCOeval(iouType='bbox')`` with ``useCats=0`` and ``maxDets=[100, 300, 1000]``.

The generated detections exercise what COCOeval's greedy matching depends on: jittered copies of the boxes
at every IoU level (so thresholds 0.5..0.95 differ), good proposals ranked past 100 and 300 (so AR@100 <
AR@300 < AR@1000), duplicate proposals and tied scores, crowd boxes, boxes of every size range (with
annotation areas that differ from box areas), images without boxes, without proposals, or with neither.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from densekit.evaluation import ProposalRecall, match_ranks
from densekit.evaluation.proposal_recall import UNMATCHED
from densekit.registry import METRICS
from densekit.structures import DetDataSample

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

KEYS = ("AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000")


def _jitter(rng: np.random.Generator, box: np.ndarray, amount: float) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + rng.normal(0, amount * w), y + rng.normal(0, amount * h),
                     w * np.exp(rng.normal(0, amount)), h * np.exp(rng.normal(0, amount))])


def _generate(seed: int = 0, num_images: int = 14):
    """A COCO ground-truth dict and a list of ``(image_id, xywh boxes (D, 4), scores (D,))``."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, num_images + 1):
        width, height = 640, 480
        images.append(dict(id=img_id, width=width, height=height, file_name=f"{img_id}.jpg"))
        num_gts = 0 if img_id in (2, 5) else int(rng.integers(1, 9))
        gts = []
        for _ in range(num_gts):
            side = float(np.exp(rng.uniform(np.log(8), np.log(300))))  # small, medium and large boxes
            w, h = side * np.exp(rng.normal(0, 0.3)), side * np.exp(rng.normal(0, 0.3))
            box = np.array([rng.uniform(0, width - w / 2), rng.uniform(0, height - h / 2), w, h])
            area = float(w * h * rng.uniform(0.5, 1.0))  # a mask area, below the box area
            if rng.random() < 0.1:
                area = 32.0 ** 2  # on a range boundary: both small and medium
            gts.append(box)
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(rng.integers(1, 3)),
                             bbox=box.tolist(), area=area, iscrowd=int(rng.random() < 0.1)))
        num_dets = 0 if img_id in (3, 5) else int(rng.choice([40, 250, 1100]))
        boxes, scores = [], []
        for k in range(num_dets):
            if gts and rng.random() < 0.5:
                boxes.append(_jitter(rng, gts[int(rng.integers(len(gts)))], rng.choice([0.02, 0.05, 0.1, 0.2, 0.4])))
            else:
                w, h = rng.uniform(5, 300, 2)
                boxes.append(np.array([rng.uniform(0, width - 5), rng.uniform(0, height - 5), w, h]))
            scores.append(round(float(rng.random()), 2) if k % 3 else float(rng.random()))  # ties among rounded
        if boxes and rng.random() < 0.5:
            boxes.append(boxes[0].copy())  # an exact duplicate with an equal score
            scores.append(scores[0])
        dets.append((img_id, np.array(boxes).reshape(-1, 4), np.array(scores)))
    gt = dict(images=images, annotations=anns, categories=[dict(id=1, name="a"), dict(id=2, name="b")])
    return gt, dets


def _pycocotools_ar(gt: dict, dets: list) -> dict[str, float]:
    results = [dict(image_id=img_id, category_id=1, bbox=box.tolist(), score=float(score))
               for img_id, boxes, scores in dets for box, score in zip(boxes, scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.useCats = 0
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(KEYS, (float(s) for s in evaluator.stats[6:12])))


def _samples(gt: dict, dets: list) -> list[dict]:
    """What mmengine's Evaluator hands the metric: ``DetDataSample.to_dict()`` per image. Boxes of one image
    are listed in COCOeval's order (by category, then annotation order), which decides exact IoU ties."""
    samples = []
    for img_id, boxes, scores in dets:
        anns = sorted((a for a in gt["annotations"] if a["image_id"] == img_id), key=lambda a: a["category_id"])
        keep = [a for a in anns if not a["iscrowd"]]
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in keep)]).reshape(-1, 4)
        sample = DetDataSample(metainfo=dict(img_id=img_id))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(xyxy, dtype=torch.float64),
                                           areas=torch.tensor([a["area"] for a in keep], dtype=torch.float64),
                                           labels=torch.zeros(len(keep), dtype=torch.long))
        pred = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1) if len(boxes) else boxes
        sample.pred_instances = InstanceData(bboxes=torch.tensor(pred, dtype=torch.float64).reshape(-1, 4),
                                             scores=torch.tensor(scores, dtype=torch.float64))
        samples.append(sample.to_dict())
    return samples


@pytest.mark.parametrize("seed", [0, 1])
def test_average_recall_equals_pycocotools(seed: int):
    gt, dets = _generate(seed)
    expected = _pycocotools_ar(gt, dets)
    metric = METRICS.build(dict(type="ProposalRecall"))
    samples = _samples(gt, dets)
    metric.process({}, samples[:5])
    metric.process({}, samples[5:])
    got = metric.compute_metrics(metric.results)
    print(f"\nseed {seed}: densekit {got}\npycocotools {expected}")
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert abs(got[key] - expected[key]) <= 1e-6, (key, got[key], expected[key])
    assert got["AR@100"] < got["AR@300"] < got["AR@1000"]  # the test reaches past 100 and 300 proposals
    assert all(0 < got[k] < 1 for k in KEYS)


def test_float32_predictions_and_box_areas():
    """RPN outputs are float32 and samples may lack ``areas`` (box areas are used): still pycocotools' result."""
    gt, dets = _generate(3)
    for ann in gt["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    dets = [(i, b.astype(np.float32).astype(np.float64), s.astype(np.float32).astype(np.float64)) for i, b, s in dets]
    expected = _pycocotools_ar(gt, dets)
    metric = ProposalRecall()
    samples = _samples(gt, dets)
    for sample in samples:
        del sample["gt_instances"]["areas"]
    metric.process({}, samples)
    got = metric.compute_metrics(metric.results)
    for key in KEYS:
        assert abs(got[key] - expected[key]) <= 1e-6, (key, got[key], expected[key])


def test_match_ranks_greedy_rules():
    ious = np.array([[0.9, 0.8],    # takes box 0 at every threshold it reaches
                     [0.95, 0.8],   # box 0 is taken below 0.9 (not by it): box 1 up to 0.8; box 0 at 0.95
                     [0.6, 0.6]])   # a tie: the later box, if still free
    ranks = match_ranks(ious, np.array([0.5, 0.85, 0.95]))
    assert ranks.tolist() == [[0, 1], [0, UNMATCHED], [1, UNMATCHED]]
    assert (match_ranks(np.zeros((0, 2))) == UNMATCHED).all() and match_ranks(np.zeros((0, 2))).shape == (10, 2)
    assert match_ranks(np.zeros((4, 0))).shape == (10, 0)


def test_no_counted_box_gives_minus_one():
    metric = ProposalRecall(proposal_nums=(10,))
    sample = DetDataSample()
    sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4))
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[0.0, 0, 10, 10]]), scores=torch.tensor([0.5]))
    metric.process({}, [sample.to_dict()])
    assert metric.compute_metrics(metric.results) == {"AR@10": -1.0, "AR_s@10": -1.0, "AR_m@10": -1.0,
                                                      "AR_l@10": -1.0}
