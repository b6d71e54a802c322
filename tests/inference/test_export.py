"""ONNX export (``densekit export``): onnxruntime agrees with PyTorch within 1e-3 at the export size and, with
dynamic axes, at another size and batch, for UPerNet + Swin-T and Swin-Unet (random-init checkpoints)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:
    import onnx  # noqa: F401  (torch.onnx.export writes through it)
    import onnxruntime as ort
except ModuleNotFoundError as error:  # both are in the test extra: a missing one is a broken setup, not a skip
    raise ImportError(f"tests/inference/test_export.py needs {error.name}: pip install -e '.[test]'") from error

from densekit.apis import build_model, load_config
from densekit.cli import export as export_command
from densekit.heads.uper_head import _pool_matrix
from densekit.inference.export import ExportWrapper

ROOT = Path(__file__).resolve().parents[2]
UPERNET = ROOT / "configs" / "upernet_swin_t_demo.py"
SWIN_UNET = ROOT / "configs" / "swin_unet_t_synapse.py"


def _checkpoint(config: Path, path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(load_config(str(config)), pretrained=False).eval()
    torch.save({"state_dict": model.state_dict()}, path)
    return model


def _diffs(output: str) -> dict[tuple[int, ...], float]:
    """``{(B, H, W): max abs diff}`` from the command's ``input (B, H, W): max |...| = X`` lines."""
    found = re.findall(r"input \((\d+), (\d+), (\d+)\): max \|onnxruntime - torch\| = (\S+)", output)
    return {tuple(map(int, row[:3])): float(row[3]) for row in found}


def _assert_onnx_matches_torch(onnx_file: Path, model: torch.nn.Module, shape: tuple[int, int, int]) -> None:
    """onnxruntime on ``onnx_file`` against the model's own path (its data preprocessor, then whole-image
    ``encode_decode``), not the export wrapper or the command's check: max abs difference <= 1e-3 on one random
    raw-pixel input ``(B, C, H, W)``, ``shape`` = ``(B, H, W)``."""
    batch, height, width = shape
    channels = model.data_preprocessor.mean.numel()
    images = torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(11)) * 255
    with torch.no_grad():
        normalised = model.data_preprocessor({"inputs": list(images)})["inputs"]
        expected = model.encode_decode(normalised).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    assert got.shape == expected.shape, f"{onnx_file.name} at {shape}: {got.shape} != {expected.shape}"
    diff = float(np.abs(got - expected).max())
    assert diff <= 1e-3, f"{onnx_file.name} at {shape}: max |onnxruntime - torch| = {diff}"


def test_upernet_dynamic_export_matches_torch_at_two_sizes(tmp_path, capsys):
    model = _checkpoint(UPERNET, tmp_path / "upernet.pth")
    out = tmp_path / "onnx" / "upernet.onnx"
    code = export_command.main([str(UPERNET), str(tmp_path / "upernet.pth"), "--shape", "256", "256", "--dynamic",
                                "--check-shape", "288", "320", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    diffs = _diffs(printed)
    assert set(diffs) == {(1, 256, 256), (2, 288, 320)} and max(diffs.values()) <= 1e-3, printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["upernet.onnx"]  # no temporary file left
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    logits_shape = session.get_outputs()[0].shape  # channel dim: the exporter's own symbol (6 at run time)
    assert logits_shape[0] == "batch" and logits_shape[2:] == ["height", "width"]
    _assert_onnx_matches_torch(out, model, (1, 256, 256))
    _assert_onnx_matches_torch(out, model, (2, 288, 320))


def test_swin_unet_export_native_size_and_dynamic(tmp_path, capsys):
    """224 (the official size: the last stage is 7x7, one window) exports as a static graph; 256 upwards as
    a dynamic one, checked at 320 x 288 with batch 2."""
    model = _checkpoint(SWIN_UNET, tmp_path / "swin_unet.pth")
    static = export_command.main([str(SWIN_UNET), str(tmp_path / "swin_unet.pth"), "--shape", "224", "224",
                                  "--out", str(tmp_path / "static.onnx")])
    dynamic = export_command.main([str(SWIN_UNET), str(tmp_path / "swin_unet.pth"), "--shape", "256", "256",
                                   "--dynamic", "--out", str(tmp_path / "dynamic.onnx")])
    printed = capsys.readouterr().out
    assert static == 0 and dynamic == 0, printed
    diffs = _diffs(printed)
    assert set(diffs) == {(1, 224, 224), (1, 256, 256), (2, 320, 288)} and max(diffs.values()) <= 1e-3, printed
    session = ort.InferenceSession(str(tmp_path / "static.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 1, 224, 224] and session.get_outputs()[0].shape == [1, 9, 224, 224]
    _assert_onnx_matches_torch(tmp_path / "static.onnx", model, (1, 224, 224))
    _assert_onnx_matches_torch(tmp_path / "dynamic.onnx", model, (2, 320, 288))


def test_dynamic_export_refuses_a_size_the_graph_cannot_generalise(tmp_path, capsys):
    """At 128 x 128 Swin-T's last stage is 4 x 4, smaller than the window 7: the traced window choice would
    be wrong at other sizes, so ``--dynamic`` is refused with the reason; a static graph is fine."""
    _checkpoint(UPERNET, tmp_path / "upernet.pth")
    args = [str(UPERNET), str(tmp_path / "upernet.pth"), "--shape", "128", "128", "--out", str(tmp_path / "u.onnx")]
    assert export_command.main([*args, "--dynamic"]) == 1
    captured = capsys.readouterr()
    assert "Swin stage 3 is 4x4, not larger than its window 7" in captured.err and ">= 225" in captured.err
    assert not (tmp_path / "u.onnx").exists()
    assert export_command.main(args) == 0
    assert _diffs(capsys.readouterr().out)[(1, 128, 128)] <= 1e-3


def test_wrapper_folds_the_preprocessor_normalisation():
    model = build_model(load_config(str(UPERNET)), pretrained=False).eval()
    image = torch.rand(3, 64, 96) * 255  # BGR, 0..255, as the pipeline loads it
    with torch.no_grad():
        batch = model.data_preprocessor({"inputs": [image]})["inputs"]
        torch.testing.assert_close(ExportWrapper(model)(image[None]), model.encode_decode(batch))


@pytest.mark.parametrize("size,bins", [((4, 4), 6), ((8, 5), 3), ((7, 9), 2), ((13, 16), 6)])
def test_traced_pyramid_pooling_equals_adaptive_avg_pool(size, bins):
    x = torch.randn(2, 3, *size)
    rows, cols = _pool_matrix(torch.tensor(size[0]), bins, x), _pool_matrix(torch.tensor(size[1]), bins, x)
    torch.testing.assert_close(torch.einsum("ph,bchw,qw->bcpq", rows, x, cols), F.adaptive_avg_pool2d(x, bins))
