"""The command-line tools: user errors as one message and exit code 1 (no traceback), data checked before a
model is built, and ``tools/train.py --resume`` continuing from the last checkpoint (torch >= 2.6 loads it
``weights_only``)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.demo import logged_runs, tiny_demo_config
from mmengine.config import Config

from densekit.cli.common import run_tool
from densekit.engine.config_check import ConfigError
from densekit.engine.data_check import check_datasets
from densekit.engine.demo import load_demo_config

ROOT = Path(__file__).resolve().parents[2]


def _tool(*args: str | Path, cwd: Path, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.perf_counter() - start


# ----------------------------------------------------------------------------------- run_tool
def test_run_tool_prints_user_errors_without_traceback(capsys):
    def missing():
        raise FileNotFoundError("Image folder /x does not exist. Download it.")

    with pytest.raises(SystemExit) as exit_info:
        run_tool(missing)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: Image folder /x does not exist. Download it.\n"

    def bad_config():
        raise ConfigError("train_dataloader needs a dataset")

    with pytest.raises(SystemExit):
        run_tool(bad_config)
    assert "train_dataloader needs a dataset" in capsys.readouterr().err


def test_run_tool_reports_unknown_types_in_a_config(capsys):
    def unknown_type():
        from mmengine.registry import init_default_scope

        from densekit.registry import MODELS

        init_default_scope("densekit")
        MODELS.build(dict(type="UPerHeadd"))

    with pytest.raises(SystemExit):
        run_tool(unknown_type)
    assert "UPerHeadd is not in the densekit::model registry" in capsys.readouterr().err


def test_run_tool_keeps_tracebacks_of_bugs():
    def bug():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_tool(bug)
    with pytest.raises(KeyError):  # a KeyError that is not a registry miss is a bug
        run_tool(lambda: {}["missing"])
    with pytest.raises(SyntaxError):  # a SyntaxError that is not mmengine's config message is a bug too
        run_tool(lambda: compile("1 +", "x.py", "exec"))


# ----------------------------------------------------------------------------------- check_datasets
def _seg_dataset(root: Path) -> dict:
    return dict(type="SegDataset", data_root=str(root), img_dir="img", ann_dir="ann", classes=["a", "b"])


def test_check_datasets_walks_wrappers_and_names_the_layout(tmp_path):
    good = tmp_path / "good"
    (good / "img").mkdir(parents=True)
    (good / "ann").mkdir()
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type="ConcatDataset", datasets=[_seg_dataset(good), dict(type="RepeatDataset", times=2,
                                                                  dataset=_seg_dataset(tmp_path / "absent"))]))))
    with pytest.raises(FileNotFoundError, match="absent/img does not exist.*expects images as"):
        check_datasets(cfg)
    cfg.train_dataloader.dataset.datasets.pop()
    check_datasets(cfg)  # the empty folders exist: only the layout is checked, nothing is listed
    with pytest.raises(ConfigError, match="val_dataloader"):
        check_datasets(Config(dict(val_dataloader=dict(batch_size=1))))


# ----------------------------------------------------------------------------------- missing ADE20K
def test_train_without_ade20k_fails_fast_with_the_expected_layout(tmp_path):
    proc, seconds = _tool(ROOT / "tools" / "train.py", ROOT / "configs" / "upernet_swin_t_ade.py",
                          "--work-dir", tmp_path / "work", cwd=tmp_path)
    print(f"\ntools/train.py without ADE20K failed in {seconds:.1f} s")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: Image folder") and message.count("\n") == 0  # one paragraph
    for needle in ("ADEChallengeData2016", "images/training", "annotations/training", "images/validation"):
        assert needle in message
    assert not (tmp_path / "work").exists()  # stopped before the Runner (and the model) was built


def test_train_with_a_missing_config_says_so(tmp_path):
    proc, _ = _tool(ROOT / "tools" / "train.py", "configs/nope.py", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "configs/nope.py does not exist" in proc.stderr


# ----------------------------------------------------------------------------------- --resume
def _tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_demo.py"
    tiny_demo_config(tmp_path / "data", log_every_iter=True).dump(str(path))
    return path


def test_train_resume_continues_from_the_last_checkpoint(tmp_path):
    config, work_dir = _tiny_config_file(tmp_path), tmp_path / "work"
    first, t_first = _tool(ROOT / "tools" / "train.py", config, "--work-dir", work_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (work_dir / "iter_2.pth").is_file() and (work_dir / "last_checkpoint").is_file()
    time.sleep(1.1)  # mmengine names each run's log folder after the second it starts
    second, t_second = _tool(ROOT / "tools" / "train.py", config, "--work-dir", work_dir, "--resume",
                             "--cfg-options", "train_cfg.max_iters=4", cwd=tmp_path)
    print(f"\nresume test: first run {t_first:.1f} s, resumed run {t_second:.1f} s")
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed epoch: 0, iter: 2" in log, log[-3000:]
    logged_iters = [[row["iter"] for row in run] for run in logged_runs(work_dir)]
    assert logged_iters == [[1, 2], [3, 4]]  # the second run started where the first stopped
    ckpt = torch.load(work_dir / "iter_4.pth", map_location="cpu", weights_only=False)
    assert ckpt["meta"]["iter"] == 4 and "optimizer" in ckpt and "message_hub" in ckpt


def test_test_tta_overlays_and_infer_on_images(tmp_path):
    """tools/test.py --tta --out-dir writes an overlay per test image and prints mIoU; tools/infer.py writes a
    mask (at the image's size) and an overlay per image of a folder."""
    import cv2

    from densekit.apis import build_model

    cfg = load_demo_config(work_dir=str(tmp_path / "work"), data_root=str(tmp_path / "data"), crop_size=64,
                           dataset=dict(num_train=2, num_val=2, size=(64, 80), seed=0))
    config = tmp_path / "demo_small.py"
    cfg.dump(str(config))
    checkpoint = tmp_path / "model.pth"
    torch.save({"state_dict": build_model(cfg, pretrained=False).state_dict(), "meta": {}}, checkpoint)
    # Generate the dataset files through the dataset class, as training would.
    from mmengine.registry import init_default_scope

    from densekit.registry import DATASETS

    init_default_scope("densekit")
    DATASETS.build(cfg.val_dataloader.dataset)

    def run(*args: str) -> str:
        result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    overlays = tmp_path / "overlays"
    log = run("tools/test.py", str(config), str(checkpoint), "--tta", "--out-dir", str(overlays),
              "--work-dir", str(tmp_path / "test_work"))
    assert "mIoU" in log
    assert len(list(overlays.glob("*.png"))) == 2
    images = tmp_path / "data" / "images" / "validation"
    preds = tmp_path / "preds"
    run("tools/infer.py", str(config), str(checkpoint), str(images), "--out-dir", str(preds))
    for image in images.glob("*.jpg"):
        mask = cv2.imread(str(preds / f"{image.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 80) and mask.max() < 6
        overlay = cv2.imread(str(preds / f"{image.stem}_overlay.png"))
        assert overlay.shape[0] > 64 and overlay.shape[1:] == (80, 3)  # the image, then its legend strip
