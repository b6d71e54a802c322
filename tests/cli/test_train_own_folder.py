"""The acceptance run of ``densekit train --data``: the demo config on a folder of real Potsdam and Vaihingen
crops (6 classes in classes.txt, .png images) trains 4 iterations with 6-output heads, an lr schedule that ends
at iteration 4 and a checkpoint at 4, with mmengine's preamble in the log file only; Ctrl-C names the last
checkpoint and the resume command."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers.own_data import build_folder, have_shared_seg
from mmengine.config import Config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_shared_seg(), reason="needs ../shared/data/seg (potsdam, vaihingen)")]


def test_the_demo_config_trains_on_a_folder_of_real_crops(tmp_path):
    data = build_folder(tmp_path / "crops")
    work = tmp_path / "W"
    args = ["upernet_swin_t_demo", "--data", str(data), "--work-dir", str(work), "--cfg-options",
            "train_cfg.max_iters=4", "train_cfg.val_interval=4"]
    proc = subprocess.run([sys.executable, "-m", "densekit", "train", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1800)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "(PolyLR) begin 20 -> 0, end 200 -> 4" in output and "checkpoint.interval 200 -> 4" in output
    assert "6 classes (impervious, building" in output
    assert "System environment" not in output and "Config:" not in output  # the preamble stays in the log file
    assert "System environment" in next(work.glob("*/*.log")).read_text()
    checkpoint = torch.load(work / "iter_4.pth", map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    assert state["decode_head.conv_seg.weight"].shape[0] == state["auxiliary_head.conv_seg.weight"].shape[0] == 6
    assert [s["end"] for s in checkpoint["param_schedulers"]] == [1, 4]
    assert Config.fromfile(str(work / "upernet_swin_t_demo.py")).param_scheduler[-1]["end"] == 4


def test_ctrl_c_names_the_last_checkpoint_and_the_resume_command(tmp_path):
    data = build_folder(tmp_path / "crops", size=64)
    work = tmp_path / "W"
    args = ["upernet_swin_t_demo", "--data", str(data), "--work-dir", str(work), "--cfg-options",
            "train_cfg.max_iters=400", "default_hooks.checkpoint.interval=1", "train_dataloader.batch_size=2"]
    proc = subprocess.Popen([sys.executable, "-m", "densekit", "train", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 900
    # last_checkpoint, not iter_1.pth: the demo config keeps one checkpoint, so iter_1.pth lives about a second
    while not (work / "last_checkpoint").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    last = [line for line in output.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted at iteration ") and "last checkpoint " in last, output
    assert last.endswith("--resume") and "densekit train upernet_swin_t_demo --data" in last, output
