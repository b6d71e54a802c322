"""A user's mistakes with ``infer``, ``test``, ``convert`` and ``export``: one ``error:`` paragraph, status 1 (2 for
usage), no traceback in the terminal, nothing left behind; a folder with unreadable files is segmented anyway.

Each command runs as a user runs it (``python -m densekit ...``) on a small UPerNet (ResNet-18, slim heads) whose
random weights the fixture saves; the bad files are written here (text, empty, truncated, another model's).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.paths import scratch_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(request) -> dict[str, Path]:
    from densekit.apis import build_model
    from densekit.engine.demo import load_demo_config

    root = scratch_dir(request, "user_errors")
    cfg = load_demo_config(work_dir=str(root / "work"), data_root=str(root / "data"), crop_size=64,
                           dataset=dict(num_train=2, num_val=2, size=(64, 80), seed=0))
    cfg.model.backbone = dict(type="resnet18")
    cfg.model.decode_head.update(in_channels=[64, 128, 256, 512], channels=16)
    cfg.model.auxiliary_head.update(in_channels=256, channels=16)
    config = root / "small.py"
    cfg.dump(str(config))
    good = root / "good.pth"
    torch.save({"state_dict": build_model(cfg, pretrained=False).state_dict(), "meta": {}}, good)
    (root / "fake.pth").write_text("this is not a checkpoint\n")
    (root / "empty.pth").write_bytes(b"")
    (root / "truncated.pth").write_bytes(good.read_bytes()[:100_000])
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}, "meta": {}}, root / "other_model.pth")
    folder = root / "photos"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), image)
    cv2.imwrite(str(folder / "b.jpg"), image)
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:60])
    (folder / "notes.txt").write_text("taken on the roof\n")
    return dict(root=root, config=config, good=good, folder=folder)


def densekit(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densekit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess, *words: str, status: int = 1) -> str:
    """Status ``status``, no traceback, the output ending in one ``error:`` paragraph holding ``words``."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == status, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "error:" in last, proc.stderr[-2000:]
    for word in words:
        assert word in last, last
    return last


@pytest.mark.parametrize("name,words", [
    ("fake.pth", ["fake.pth", "not a PyTorch checkpoint"]),
    ("empty.pth", ["empty.pth", "empty (0 bytes)"]),
    ("truncated.pth", ["truncated.pth", "truncated or corrupt"]),
    ("other_model.pth", ["other_model.pth", "decode_head"]),
])
def test_infer_refuses_a_bad_checkpoint_in_one_line(files, name, words):
    out = files["root"] / f"out_{name}"
    proc = densekit("infer", files["config"], files["root"] / name, files["folder"], "--out-dir", out,
                    cwd=files["root"])
    assert_user_error(proc, *words)
    assert not out.exists()


@pytest.mark.parametrize("name", ["truncated.pth", "other_model.pth"])
def test_test_refuses_a_bad_checkpoint_before_the_runner(files, name):
    """Today's mmengine load_from would evaluate random weights for another model's checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from densekit.registry import DATASETS

    init_default_scope("densekit")
    DATASETS.build(Config.fromfile(str(files["config"])).test_dataloader.dataset)  # the data exists
    work = files["root"] / f"test_work_{name}"
    proc = densekit("test", files["config"], files["root"] / name, "--work-dir", work, cwd=files["root"])
    assert_user_error(proc, name)
    assert not work.exists()


@pytest.mark.parametrize("name,words", [("fake.pth", ["not a PyTorch checkpoint"]), ("empty.pth", ["empty"])])
def test_convert_names_why_a_file_is_not_a_checkpoint(files, name, words):
    dst = files["root"] / "converted.pth"
    proc = densekit("convert", files["root"] / name, dst, "--model", "swin_t", cwd=files["root"])
    assert_user_error(proc, name, *words)
    assert not dst.exists()


@pytest.mark.parametrize("shape", [["-256", "256"], ["0", "256"]])
def test_export_checks_the_shape_before_loading_the_model(files, shape):
    proc = densekit("export", files["config"], files["good"], "--shape", *shape, cwd=files["root"])
    assert_user_error(proc, "--shape", shape[0], status=2)
    assert "loaded" not in proc.stdout + proc.stderr  # the model was never built
    assert not files["good"].with_suffix(".onnx").exists()


def test_infer_checks_its_input_before_loading_the_model(files):
    out = files["root"] / "out_missing"
    proc = densekit("infer", files["config"], files["good"], files["root"] / "nothere.png", "--out-dir", out,
                    cwd=files["root"])
    assert_user_error(proc, "nothere.png", "does not exist")
    assert "loaded" not in proc.stdout + proc.stderr
    assert not out.exists()


def test_infer_on_a_folder_skips_unreadable_files_and_writes_the_rest(files):
    out = files["root"] / "out_folder"
    proc = densekit("infer", files["config"], files["good"], files["folder"], "--out-dir", out, cwd=files["root"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    assert "skipped 2 of 4 files" in text and "broken.png" in text and "notes.txt" in text
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    assert f"wrote {out / 'a_mask.png'}" in text


def test_infer_stops_at_an_unreadable_file_with_on_error_stop(files):
    out = files["root"] / "out_stop"
    proc = densekit("infer", files["config"], files["good"], files["folder"], "--out-dir", out, "--on-error",
                    "stop", cwd=files["root"])
    assert_user_error(proc, "broken.png", "--on-error skip")
    single = densekit("infer", files["config"], files["good"], files["folder"] / "notes.txt", "--out-dir", out,
                      cwd=files["root"])
    assert_user_error(single, "notes.txt", "no images")
