"""``densekit infer`` on NIfTI windows intensities as the model was trained: the window of its config's dataset.

A Swin-Unet config trained with ``NiftiSliceDataset(window='mr')`` on the real MR sample: infer must feed the
network exactly the tensors the config's pipeline (``ResizeSlice`` + ``PackMedicalInputs`` + the data
preprocessor) gives it for the same slices, and say ``window: mr``. Before, infer windowed every NIfTI as CT,
which squashes MR intensities into a narrow band. Uses ``../shared/data/medical/mr_crop.nii.gz``; skips without it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.paths import SHARED_DATA
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import densekit.cli.infer as infer_cli
from densekit.apis import build_model

REPO = Path(__file__).resolve().parents[2]
IMAGE = SHARED_DATA / "medical" / "mr_crop.nii.gz"
SIZE = (64, 64)

pytestmark = pytest.mark.skipif(not IMAGE.is_file(), reason=f"MR sample not found: {IMAGE}")


def mr_config(window) -> Config:
    dataset = dict(type="NiftiSliceDataset", images=[str(IMAGE)], labels=None, window=window,
                   classes=["background", "structure_1", "structure_2"],
                   pipeline=[dict(type="ResizeSlice", output_size=SIZE), dict(type="PackMedicalInputs")])
    return Config(dict(
        default_scope="densekit",
        model=dict(
            type="SwinUnet",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[0.0], std=[1.0], bgr_to_rgb=False, size=SIZE),
            backbone=dict(type="SwinTransformer", embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                          window_size=4, in_chans=1, drop_path_rate=0.0),
            decode_head=dict(type="SwinUnetDecoder", in_channels=[24, 48, 96, 192], num_classes=3)),
        test_dataloader=dict(batch_size=1, num_workers=0, sampler=dict(type="DefaultSampler", shuffle=False),
                             dataset=dataset),
    ))


def pipeline_inputs(cfg: Config, model: torch.nn.Module) -> torch.Tensor:
    """``(D, 1, h, w)``: what the config's test pipeline and the model's data preprocessor make of each slice."""
    from mmengine.registry import init_default_scope

    from densekit.registry import DATASETS

    init_default_scope("densekit")
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return torch.cat([model.data_preprocessor(pseudo_collate([dataset[i]]), False)["inputs"]
                      for i in range(len(dataset))])


def run_infer(tmp_path: Path, cfg: Config, monkeypatch, capsys, *extra: str) -> tuple[torch.Tensor, str]:
    """Run ``densekit infer`` in-process; returns the inputs the network got (slices in order) and stdout."""
    config, checkpoint = tmp_path / "mr.py", tmp_path / "mr.pth"
    cfg.dump(str(config))
    torch.manual_seed(0)
    torch.save({"state_dict": build_model(cfg, pretrained=False).state_dict(), "meta": {}}, checkpoint)
    seen: list[torch.Tensor] = []
    real_init = infer_cli.init_model

    def spying_init(*args, **kwargs):
        model = real_init(*args, **kwargs)
        model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
        return model

    monkeypatch.setattr(infer_cli, "init_model", spying_init)
    infer_cli.main([str(config), str(checkpoint), str(IMAGE), "--out-dir", str(tmp_path / "out"),
                    "--volume-resize", "zoom", "--no-accel", *extra])
    return torch.cat(seen), capsys.readouterr().out


def test_infer_feeds_the_network_what_the_mr_training_pipeline_made(tmp_path, monkeypatch, capsys):
    cfg = mr_config("mr")
    got, out = run_infer(tmp_path, cfg, monkeypatch, capsys)
    assert "window: mr" in out
    expected = pipeline_inputs(cfg, build_model(cfg, pretrained=False))
    assert got.shape == expected.shape == (35, 1, *SIZE)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (tmp_path / "out" / "mr_crop_pred.nii.gz").is_file()


def test_an_explicit_window_still_wins(tmp_path, monkeypatch, capsys):
    cfg = mr_config("mr")
    got, out = run_infer(tmp_path, cfg, monkeypatch, capsys, "--window", "ct")
    assert "window: ct (--window)" in out
    ct = pipeline_inputs(mr_config("ct"), build_model(cfg, pretrained=False))
    torch.testing.assert_close(got, ct, atol=1e-5, rtol=0)


def test_a_fixed_range_window_of_the_config_is_used(tmp_path, monkeypatch, capsys):
    cfg = mr_config([0.0, 400.0])
    got, out = run_infer(tmp_path, cfg, monkeypatch, capsys)
    assert "window: [0.0, 400.0]" in out
    torch.testing.assert_close(got, pipeline_inputs(cfg, build_model(cfg, pretrained=False)), atol=1e-5, rtol=0)
