"""tools/convert.py end to end, and verification against timm after changing window and channels."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from helpers.tools import load_tool

import densekit
from densekit.convert.timm import timm_to_densekit
from densekit.inference.convert_files import convert_file
from densekit.inference.verify import verify_conversion

REPO = Path(__file__).resolve().parents[2]


def test_tool_converts_and_verifies(timm_state_dict, tmp_path):
    src = tmp_path / "swin_tiny_patch4_window7_224.pth"
    dst = tmp_path / "swin_t_densekit.pth"
    torch.save(timm_state_dict, src)
    command = [sys.executable, str(REPO / "tools" / "convert.py"), str(src), str(dst), "--model", "swin_t", "--verify"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    diffs = [float(d) for d in re.findall(r"stage \d: max \|densekit - timm\| = (\S+)", proc.stdout)]
    assert len(diffs) == 4 and max(diffs) < 1e-4, proc.stdout
    assert "verify OK" in proc.stdout and "timm layout" in proc.stdout
    # one account of the output norms: the conversion's (6 initialised), not a second load's "dropped 8"
    assert proc.stdout.count("out_norms.0.weight") == 1 and "dropped 8" not in proc.stdout + proc.stderr
    assert sorted(os.listdir(tmp_path)) == sorted([src.name, dst.name])  # no temporary file left

    model = densekit.create_backbone("swin_t", pretrained=str(dst))
    loaded = model.state_dict()
    saved = torch.load(dst, map_location="cpu", weights_only=True)["state_dict"]
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    expected, _ = timm_to_densekit(timm_state_dict)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_tool_reports_a_missing_source(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert load_tool().main([str(missing), str(tmp_path / "x.pth"), "--model", "swin_t"]) == 1
    assert str(missing) in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_verify_after_changing_window_and_channels(timm_pth, tmp_path):
    """timm is built at the new window / channels and given densekit's resized tables and summed kernel.

    Window 8 (input 256) rather than 12 (384) keeps the test fast; timm has no registered
    ``swin_tiny_patch4_window8_256``, so this also covers building timm's Swin from kwargs.
    """
    dst = tmp_path / "swin_t_w8_gray.safetensors"
    report = convert_file(timm_pth, dst, "swin_t", window_size=8, in_chans=1)
    assert len(report.resized) == 13
    diffs = verify_conversion(timm_pth, dst, "swin_t", window_size=8, in_chans=1)
    assert len(diffs) == 4 and max(diffs) < 1e-4, diffs
