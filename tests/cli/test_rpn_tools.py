"""tools/test.py and tools/infer.py serve RPN configs: recall, proposals drawn on the images, proposals as JSON.

The demo detection config with a random-init checkpoint saved by the test, on a few generated images.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.paths import scratch_dir

from densekit.apis import inference_model, init_model
from densekit.datasets.det.demo import make_demo_det_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "rpn_regnetx_002_fpn_demo.py"


@pytest.fixture(scope="module")
def checkpoint(request) -> Path:
    torch.manual_seed(0)
    model = init_model(str(CONFIG))
    path = scratch_dir(request, "ckpt") / "rpn_demo.pth"
    torch.save({"meta": {"dataset_meta": {"classes": ["object"]}}, "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def data_root(request) -> Path:
    root = scratch_dir(request, "demo_det")
    make_demo_det_dataset(str(root), num_train=2, num_val=3)
    return root


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_test_tool_reports_recall_and_draws_proposals(checkpoint, data_root, tmp_path):
    out = tmp_path / "pictures"
    result = _run("test.py", str(CONFIG), str(checkpoint), "--work-dir", str(tmp_path / "work"), "--out-dir", str(out),
                  "--cfg-options", f"test_dataloader.dataset.data_root={data_root}",
                  "test_dataloader.dataset.num_train=2", "test_dataloader.dataset.num_val=3")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = eval(result.stdout.strip().splitlines()[-1])  # the tool's last line is the metrics dict
    assert {"AR@100", "AR@300", "AR@1000"} <= set(metrics)
    assert all(0 <= v <= 1 or v == -1 for v in metrics.values())  # -1: COCO's "no objects of this size"
    assert 0 < metrics["AR@100"] <= metrics["AR@300"] <= metrics["AR@1000"]
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 3
    image = cv2.imread(str(pictures[0]))
    source = cv2.imread(str(next((data_root / "images" / "val").glob(pictures[0].stem + ".*"))))
    assert image.shape == source.shape and not np.array_equal(image, source)  # boxes were drawn


def test_infer_tool_writes_proposals_best_first_inside_the_image(checkpoint, data_root, tmp_path):
    images = sorted((data_root / "images" / "val").iterdir())[:2]
    assert len(images) == 2
    result = _run("infer.py", str(CONFIG), str(checkpoint), *map(str, images), "--out-dir", str(tmp_path),
                  "--top-k", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    for path in images:
        height, width = cv2.imread(str(path)).shape[:2]
        drawn = cv2.imread(str(tmp_path / f"{path.stem}_proposals.png"))
        assert drawn.shape == (height, width, 3)
        found = json.loads((tmp_path / f"{path.stem}_proposals.json").read_text())
        boxes, scores = np.asarray(found["boxes"]), np.asarray(found["scores"])
        assert 0 < len(boxes) <= 1000 and boxes.shape == (len(scores), 4)
        assert (np.diff(scores) <= 1e-6).all(), "proposals are not best first"
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 3] <= height).all() and (boxes[:, 2] >= boxes[:, 0]).all()


def test_init_model_and_inference_model_on_an_rpn(checkpoint, data_root):
    model = init_model(str(CONFIG), str(checkpoint))
    assert model.dataset_meta == {"classes": ["object"]} and model.load_report.kind == "RPN"
    image = cv2.imread(str(sorted((data_root / "images" / "val").iterdir())[0]))
    sample = inference_model(model, image)
    assert sample.pred_instances.bboxes.shape[1] == 4
    assert len(sample.pred_instances.scores) == len(sample.pred_instances.bboxes) <= 1000
    objectness, deltas = model(torch.zeros(1, 3, 64, 64), mode="tensor")
    assert [o.shape[1] for o in objectness] == [3] * 5 and [d.shape[1] for d in deltas] == [12] * 5
