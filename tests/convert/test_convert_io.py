"""Reading checkpoints safely, unwrapping them, clear errors, and the report's summary."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import CheckpointLoader

from densekit.convert import (
    CheckpointError,
    LoadReport,
    checkpoint_safe_globals,
    read_checkpoint,
    unwrap,
)
from densekit.convert.report import NOT_IN_CHECKPOINT


class Opaque:
    """Any class a checkpoint might pickle; weights_only must refuse it."""


class Sneaky:
    """Pickles as ``getattr(HistoryBuffer, 'update')``: the allow-listed getattr must refuse it."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, "update"))


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "swin_tiny.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_checkpoint(path)


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


def test_summary_warns_about_missing_weights_but_not_out_norms():
    out_norm = "output norm classification weights do not have: initialised"
    quiet = LoadReport(layout="timm", missing=[("out_norms.0.weight", out_norm), ("out_norms.0.bias", out_norm)])
    assert quiet.missing_weights() == [] and "WARNING" not in quiet.summary()
    loud = LoadReport(layout="timm", missing=[("out_norms.0.weight", out_norm),
                                              ("stages.2.blocks.6.norm1.weight", NOT_IN_CHECKPOINT)])
    assert loud.missing_weights() == ["stages.2.blocks.6.norm1.weight"]
    assert "WARNING: 1 weights" in loud.summary() and "missing 2" in loud.summary()
