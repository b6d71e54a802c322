"""The file converters (densekit.inference.convert_files): a Swin backbone file -> a densekit checkpoint, .pth and
.safetensors, written atomically. Whole-model files: tests/inference/test_checkpoint.py."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

import densekit
from densekit.convert.timm import timm_to_densekit
from densekit.fileio import save_atomically
from densekit.inference.convert_files import convert_file


def test_convert_file_pth_then_safetensors(timm_pth, timm_state_dict, tmp_path):
    out = tmp_path / "out"  # does not exist yet
    dst = out / "swin_t.pth"
    report = convert_file(timm_pth, dst, "swin_t")
    assert report.layout == "timm" and len(report.missing) == 6
    checkpoint = torch.load(dst, map_location="cpu", weights_only=True)
    assert checkpoint["meta"] == {"densekit_version": densekit.__version__, "source": str(timm_pth), "layout": "timm",
                                  "model": "swin_t", "window_size": 7, "in_chans": 3}
    expected, _ = timm_to_densekit(timm_state_dict)
    saved = checkpoint["state_dict"]
    assert set(saved) - set(expected) == {f"out_norms.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert all(torch.equal(saved[k], v) for k, v in expected.items())
    assert torch.equal(saved["out_norms.0.weight"], torch.ones(96))  # missing: left at LayerNorm init

    st = out / "swin_t_w12.safetensors"  # from the densekit file just written, to a new window
    report = convert_file(dst, st, "swin_t", window_size=12)
    assert report.layout == "densekit" and len(report.resized) == 12 and report.missing == []
    with safe_open(str(st), "pt") as f:
        metadata = f.metadata()
        table = f.get_tensor("stages.3.blocks.1.attn.relative_position_bias_table")
    assert metadata["layout"] == "densekit" and metadata["window_size"] == "12" and metadata["source"] == str(dst)
    assert table.shape == (529, 24)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(st).st_mode & 0o777 == 0o666 & ~mask
    assert sorted(os.listdir(out)) == ["swin_t.pth", "swin_t_w12.safetensors"]  # no temporary files


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    dst = tmp_path / "swin_t.pth"
    dst.write_bytes(b"old")

    def write_half(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_atomically(dst, write_half)
    assert dst.read_bytes() == b"old" and os.listdir(tmp_path) == ["swin_t.pth"]
    with pytest.raises(FileNotFoundError):
        convert_file(tmp_path / "missing.pth", tmp_path / "new.pth", "swin_t")
    assert os.listdir(tmp_path) == ["swin_t.pth"]


