"""Reading, unwrapping, clear errors, and writing densekit checkpoints atomically."""
from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader
from safetensors import safe_open

import densekit
from densekit.convert import (
    CheckpointError,
    LoadReport,
    checkpoint_safe_globals,
    convert_file,
    load_pretrained,
    read_checkpoint,
    unwrap,
)
from densekit.convert.timm import timm_to_densekit
from densekit.fileio import save_atomically


class Opaque:
    """Any class a checkpoint might pickle; weights_only must refuse it."""


class Sneaky:
    """Pickles as ``getattr(HistoryBuffer, 'update')``: the allow-listed getattr must refuse it."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, "update"))


def test_missing_file_names_the_path(dk_model, tmp_path):
    path = tmp_path / "nowhere" / "swin_tiny.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_pretrained(dk_model, path)


def test_unreadable_files_name_the_path(tmp_path):
    for name in ("garbage.pth", "garbage.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"definitely not a checkpoint")
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            read_checkpoint(path)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown extension '.onnx'"):
        read_checkpoint(other)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(CheckpointError, match="not a dict"):
        read_checkpoint(a_list)


def test_weights_only_refusal_explains_the_fix(tmp_path):
    path = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": {"hook": Opaque()}}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "Opaque" in message and "--unsafe-load (unsafe_load=True)" in message


def test_mmengine_runner_checkpoint_with_message_hub_loads(tmp_path):
    """What mmengine 0.10 Runner.save_checkpoint writes: numpy in meta, HistoryBuffers in message_hub."""
    hub = MessageHub.get_instance("densekit-convert-test")
    hub.update_scalar("train/loss", 0.5)
    hub.update_scalar("train/lr", np.float64(1e-4))
    hub.update_info("iter", 10)
    meta = {"seed": np.int64(42), "epoch": 1, "iter": 10, "mmengine_version": "0.10.7", "cfg": "model = dict()",
            "dataset_meta": {"classes": ("a", "b"), "palette": np.array([[1, 2, 3], [4, 5, 6]])}}
    weight = torch.randn(288, 96)
    path = tmp_path / "iter_10.pth"
    torch.save({"meta": meta, "state_dict": {"backbone.stages.0.blocks.0.attn.qkv.weight": weight},
                "message_hub": hub.state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    checkpoint = read_checkpoint(path)
    assert checkpoint["meta"]["seed"] == 42
    buffer = checkpoint["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, HistoryBuffer) and buffer.mean() == 0.5
    state_dict = unwrap(checkpoint)
    assert list(state_dict) == ["stages.0.blocks.0.attn.qkv.weight"]
    assert torch.equal(state_dict["stages.0.blocks.0.attn.qkv.weight"], weight)
    with pytest.raises(pickle.UnpicklingError):  # the allow-list was scoped to read_checkpoint
        torch.load(path, weights_only=True)
    with checkpoint_safe_globals():  # what densekit.apis wraps around mmengine's resume / load_from
        resumed = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert isinstance(resumed["message_hub"]["log_scalars"]["train/lr"], HistoryBuffer)


def test_allow_listed_getattr_reaches_only_history_buffer_statistics(tmp_path):
    path = tmp_path / "sneaky.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "x": Sneaky()}, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        read_checkpoint(path)


def test_unwrap_wrappers_and_prefixes():
    t = torch.zeros(1)
    assert list(unwrap({"model": {"a.b": t}, "optimizer": {}})) == ["a.b"]
    assert list(unwrap({"module": {"module.a": t, "module.b": t}})) == ["a", "b"]
    segmentor = {"meta": {"epoch": 1}, "state_dict": {"backbone.a": t, "decode_head.w": t, "n_iter": 3}}
    assert list(unwrap(segmentor)) == ["a", "decode_head.w"]
    with pytest.raises(CheckpointError, match="both"):
        unwrap({"backbone.a": t, "a": t})
    with pytest.raises(CheckpointError, match="no state dict"):
        unwrap({"meta": {"epoch": 1}})


def test_swin_s_weights_into_swin_t_name_the_unexpected_keys(dk_model, timm_state_dict, tmp_path):
    swin_s = dict(timm_state_dict)  # Swin-S = Swin-T with 18 blocks in stage 2, same widths
    block0 = {k: v for k, v in timm_state_dict.items() if k.startswith("layers.2.blocks.0.")}
    for j in range(6, 18):
        swin_s.update({k.replace("blocks.0.", f"blocks.{j}."): v for k, v in block0.items()})
    path = tmp_path / "swin_small_patch4_window7_224.pth"
    torch.save(swin_s, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(dk_model, path, verbose=False)
    message = str(err.value)
    assert str(path) in message
    assert f"{12 * len(block0)} unexpected keys" in message
    assert "stages.2.blocks.6.norm1.weight (checkpoint: layers.2.blocks.6.norm1.weight)" in message


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


def test_summary_warns_about_missing_weights_but_not_out_norms():
    quiet = LoadReport(layout="timm", missing=["out_norms.0.weight", "out_norms.0.bias"])
    assert quiet.missing_weights() == [] and "WARNING" not in quiet.summary()
    loud = LoadReport(layout="timm", missing=["out_norms.0.weight", "stages.2.blocks.6.norm1.weight"])
    assert loud.missing_weights() == ["stages.2.blocks.6.norm1.weight"]
    assert "WARNING: 1 weights" in loud.summary() and "missing 2" in loud.summary()
