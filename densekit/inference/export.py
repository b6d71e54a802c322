"""ONNX export of a segmentor's whole-image forward, and a parity check with onnxruntime (``densekit export``).

The exported graph maps raw pixels to logits: ``image`` ``(B, C, H, W)`` float32 on the 0..255 scale in the
channel order the config's pipeline loads (BGR for colour images) -> the data preprocessor's normalisation
(``bgr_to_rgb``, ``(x - mean) / std``) -> ``model.encode_decode`` -> ``logits`` ``(B, K, H, W)``.

The TorchScript-tracing exporter (``torch.onnx.export(dynamo=False)``) is used. torch 2.14's default, the dynamo
exporter, did not work on these models (measured with torch 2.14.1, onnxscript 0.7.2, Swin-T UPerNet): static
export fails while decomposing the graph (``IndexError`` in ``set_missing_meta_vals``), and a dynamic-shape
export had not finished after 15 minutes. Tracing records sizes as graph values, so the Swin layers pad, crop
and build their shift masks unconditionally and uncached while tracing (``is_tracing``), and UPerNet's pyramid
pooling pools with averaging matrices built from the input size (ONNX has no adaptive pooling): the graph then
holds for other sizes. What tracing still bakes in is Swin's choice of window per stage (a stage no larger
than the window takes one window of its smaller side, no shift): ``dynamic_size_problem`` says when a size
makes that choice, and the parity check at a second size catches anything else.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbones.swin import SwinTransformer
from ..models.preprocessor import SegDataPreProcessor
from .api import init_model

EXPORT_EXTRA = "pip install 'densekit[export]'  (onnx, onnxruntime)"


class MissingExportDependency(ImportError):
    """onnx or onnxruntime is not installed; the message says how to install them."""


class ExportWrapper(nn.Module):
    """``image`` ``(B, C, H, W)`` raw pixels -> ``logits`` ``(B, K, H, W)``: normalisation plus the model's
    whole-image ``encode_decode`` (``EncoderDecoder`` or ``SwinUnet``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "encode_decode"):
            raise TypeError(f"{type(model).__name__} has no encode_decode(inputs); export takes a segmentor "
                            "(EncoderDecoder or SwinUnet)")
        pre = model.data_preprocessor
        if not isinstance(pre, SegDataPreProcessor):
            raise TypeError(f"export needs a SegDataPreProcessor to fold into the graph, got {type(pre).__name__}")
        self.model = model
        self.bgr_to_rgb = pre.bgr_to_rgb
        self.register_buffer("mean", pre.mean.detach().clone()[None], persistent=False)  # (1, C, 1, 1)
        self.register_buffer("std", pre.std.detach().clone()[None], persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.bgr_to_rgb and image.shape[1] == 3:
            image = image.flip(1)
        return self.model.encode_decode((image - self.mean) / self.std)


def load_segmentor(config: str, checkpoint: str, cfg_options: dict | None = None) -> ExportWrapper:
    """The config's model with ``checkpoint`` loaded (``init_model``), wrapped for export, in eval mode: the plain
    network, without densekit's CPU fast paths (the graph must hold the public ops)."""
    model = init_model(config, checkpoint, device="cpu", cfg_options=cfg_options, accel=False)
    test_cfg = getattr(model, "test_cfg", None) or {}
    if test_cfg.get("mode", "whole") != "whole" or test_cfg.get("tta"):
        print(f"note: {config} infers with test_cfg {model.test_cfg}; the graph is the whole-image forward")
    return ExportWrapper(model).eval()


def _in_chans(model: ExportWrapper) -> int:
    return int(model.mean.shape[1])


def dynamic_size_problem(model: nn.Module, height: int, width: int) -> str | None:
    """Why a graph traced at ``height x width`` would not hold for other sizes, or None.

    Each Swin stage with a side no larger than its window runs one window of its smaller side and no shift:
    a Python decision that tracing bakes in. A dynamic graph needs every stage larger than the window.
    """
    for swin in (m for m in model.modules() if isinstance(m, SwinTransformer)):
        h, w = -(-height // swin.patch_size), -(-width // swin.patch_size)
        for index in range(len(swin.stages)):
            if min(h, w) <= swin.window_size:
                smallest = swin.patch_size * 2 ** (len(swin.stages) - 1) * swin.window_size + 1
                return (f"at {height}x{width} Swin stage {index} is {h}x{w}, not larger than its window "
                        f"{swin.window_size}: the traced graph would hold for this size only. Export with "
                        f"--dynamic at H, W >= {smallest}, or without --dynamic at each size you need")
            h, w = -(-h // 2), -(-w // 2)
    return None


def export_onnx(model: ExportWrapper, out: str | Path, shape: tuple[int, int, int], dynamic: bool = False,
                opset: int = 17) -> Path:
    """Write ``model`` as ONNX to ``out`` (atomically), traced at ``shape`` = ``(B, H, W)``.

    ``dynamic``: batch, height and width of ``image`` and ``logits`` are symbolic; raises ``ValueError`` when
    ``dynamic_size_problem`` finds the size unfit. Returns ``out``.
    """
    _require("onnx")
    batch, height, width = shape
    if dynamic and (problem := dynamic_size_problem(model, height, width)):
        raise ValueError(problem)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(batch, _in_chans(model), height, width) * 255
    axes = {0: "batch", 2: "height", 3: "width"}
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about sizes, the exporter's deprecation notice
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["image"],
                              output_names=["logits"], opset_version=opset,
                              dynamic_axes={"image": axes, "logits": axes} if dynamic else None)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_onnx(model: ExportWrapper, onnx_file: str | Path, shape: tuple[int, int, int], seed: int = 0) -> float:
    """Max abs difference between onnxruntime on ``onnx_file`` and ``model`` on one random ``(B, H, W)`` input."""
    ort = _require("onnxruntime")
    generator = torch.Generator().manual_seed(seed)
    batch, height, width = shape
    image = torch.rand(batch, _in_chans(model), height, width, generator=generator) * 255
    with torch.no_grad():
        expected = model(image).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": image.numpy()})
    if got.shape != expected.shape:
        raise ValueError(f"{onnx_file}: logits {got.shape} for input {tuple(image.shape)}, expected {expected.shape}")
    return float(np.abs(got - expected).max())


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise MissingExportDependency(f"densekit export needs {name}: {EXPORT_EXTRA}") from error
