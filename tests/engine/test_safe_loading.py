"""Safe loading: pickles of arbitrary objects are refused (naming the type) everywhere a checkpoint is read,
unless unsafe_load=True; pretrained=True never reaches the network; a checkpoint of another architecture is named."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.paths import scratch_dir
from helpers.toy_runs import nan_loss_config
from mmengine.runner.checkpoint import _load_checkpoint

from densekit.apis import build_model, init_model, load_config, safe_loading, train
from densekit.backbones import SwinTransformer, create_backbone
from densekit.backbones.timm_backbone import TimmBackbone
from densekit.convert import CheckpointError, read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
default_scope = "densekit"
model = dict(
    type="EncoderDecoder",
    backbone=dict(type="resnet18"),
    decode_head=dict(type="UPerHead", in_channels=[64, 128, 256, 512], channels=8, num_classes=3),
)
"""


class Evil:
    """Any class a file may name: unpickling it imports and instantiates code of the file's choosing."""


def _mark(path: str) -> str:
    Path(path).write_text("code ran")
    return path


class RunsCode:
    """Whose ``__reduce__`` makes unpickling call ``_mark(path)``: a stand-in for ``os.system``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return _mark, (self.path,)


@pytest.fixture(scope="module")
def tiny(request):
    root = scratch_dir(request, "safe")
    config = root / "upernet_r18.py"
    config.write_text(CONFIG)
    state_dict = build_model(load_config(str(config))).state_dict()
    evil = root / "evil.pth"
    torch.save({"state_dict": state_dict, "meta": {"note": Evil()}}, evil)
    return dict(root=root, config=str(config), evil=evil, state_dict=state_dict)


def test_read_checkpoint_refuses_an_arbitrary_class_naming_it(tiny):
    with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*evil\.pth: it pickles "
                                              r"\S*test_safe_loading\.Evil.*--unsafe-load \(unsafe_load=True\)"):
        read_checkpoint(tiny["evil"])
    assert isinstance(read_checkpoint(tiny["evil"], unsafe_load=True)["meta"]["note"], Evil)


def test_reduce_payload_does_not_run(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "payload.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": RunsCode(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"_mark"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"_mark"), safe_loading():
        _load_checkpoint(str(path), map_location="cpu")  # what mmengine's resume and load_from call
    assert not marker.exists()
    read_checkpoint(path, unsafe_load=True)  # the opt-in really unpickles: the payload runs
    assert marker.read_text() == "code ran"


def test_init_model_refuses_unless_unsafe_load(tiny):
    with pytest.raises(CheckpointError, match=r"evil\.pth: it pickles \S*Evil"):
        init_model(tiny["config"], str(tiny["evil"]))
    model = init_model(tiny["config"], str(tiny["evil"]), unsafe_load=True)
    key = "decode_head.conv_seg.weight"
    assert torch.equal(model.state_dict()[key], tiny["state_dict"][key])


def test_mmengine_loading_is_weights_only_whatever_the_environment(tiny, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's environment cannot turn safety off
    with pytest.raises(CheckpointError, match=r"evil\.pth: it pickles \S*Evil"), safe_loading(source=str(tiny["evil"])):
        _load_checkpoint(str(tiny["evil"]), map_location="cpu")
    with safe_loading(unsafe_load=True):
        assert isinstance(_load_checkpoint(str(tiny["evil"]), map_location="cpu")["meta"]["note"], Evil)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_resume_refuses_an_unsafe_latest_checkpoint(tmp_path):
    evil = tmp_path / "iter_2.pth"
    torch.save({"state_dict": {}, "meta": {"note": Evil()}}, evil)
    (tmp_path / "last_checkpoint").write_text(str(evil))
    with pytest.raises(CheckpointError, match=rf"latest checkpoint in {tmp_path}: it pickles \S*Evil.*--unsafe-load"):
        train(nan_loss_config(nan_at=100), work_dir=str(tmp_path), resume=True)


@pytest.mark.parametrize("build, expected", [
    (lambda: create_backbone("swin_t", pretrained=True), r"swin_t: .*checkpoints/swin_tiny_patch4_window7_224\.pth"),
    (lambda: create_backbone("resnet18", pretrained=True), r"resnet18: .*checkpoints/resnet18_a1_0-d63eafa0\.pth"),
    (lambda: TimmBackbone("resnet18", pretrained=True), r"resnet18: pretrained=True asks for downloaded weights"),
    (lambda: SwinTransformer(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), pretrained=True),
     r"SwinTransformer: pretrained=True .*never downloads"),
])
def test_pretrained_true_fails_without_touching_the_network(no_network, build, expected):
    with pytest.raises(ValueError, match=expected):
        build()
    assert no_network == []


def test_a_checkpoint_of_another_architecture_is_named(tiny, tmp_path):
    swin_unet = build_model(load_config(str(ROOT / "configs" / "swin_unet_t_synapse.py")), pretrained=False)
    path = tmp_path / "swin_unet.pth"
    torch.save({"state_dict": swin_unet.state_dict()}, path)
    expected = r"(?s)swin_unet\.pth: .*hint: this is a Swin-Unet checkpoint \(SwinUnet\) but the config builds EncoderD"
    with pytest.raises(CheckpointError, match=expected):
        init_model(tiny["config"], str(path))
