"""Inference API: a model from a config and a checkpoint, and a prediction for one image."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate

from ..accel import optimize
from ..engine.compile import compile_method
from ..engine.config import load_config
from ..models.builder import build_model
from ..registry import DATASETS, TRANSFORMS
from .checkpoint import load_model_checkpoint


def init_model(config: str | Config, checkpoint: str | None = None, device: str = "cpu",
               cfg_options: dict | None = None, unsafe_load: bool = False, compile: bool = False,
               accel: bool | None = None) -> torch.nn.Module:
    """Build the config's model, load ``checkpoint`` (safely, strictly), move it to ``device``, set eval mode;
    install densekit's CPU fast paths (``densekit.accel.optimize``) when ``accel`` is True, or None and the
    model is on the CPU (False: the plain model, as export needs); ``compile=True`` then compiles its inference
    path with a fallback to eager (``compile_inference``).

    ``checkpoint`` may be a densekit/mmengine checkpoint, a whole mmsegmentation or HuggingFace UperNet
    checkpoint, an official Swin-Unet checkpoint, or for RPN configs an mmdetection (2.x or 3.x) or torchvision
    Faster R-CNN checkpoint, converted on load (``densekit.inference.checkpoint``); keys that do not fit raise
    ``CheckpointError``. The model keeps the config as ``model.cfg``, class names / palette as
    ``model.dataset_meta`` (from the checkpoint, else the config's test dataset) and the
    ``LoadReport`` as ``model.load_report``. A ``.pth`` holding anything but tensors and mmengine's
    metadata is refused (``CheckpointError`` naming the types) unless ``unsafe_load=True``.
    """
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, pretrained=checkpoint is None)
    meta: dict = {}
    model.load_report = None
    if checkpoint is not None:
        from mmengine.logging import print_log

        report = load_model_checkpoint(model, checkpoint, unsafe_load=unsafe_load)
        print_log(report.summary(), logger="current")
        meta, model.load_report = report.dataset_meta, report
    model.cfg = cfg
    model.dataset_meta = meta or _dataset_meta(cfg)
    model = model.to(device).eval()
    optimize(model, enabled=accel if accel is not None else torch.device(device).type == "cpu")
    if compile:
        compile_inference(model)
    return model


def compile_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Compile, in place, the part of ``model`` every inference path runs (``densekit.engine.compile.compile_method``:
    ``torch.compile`` at the first call, eager with one warning naming the reason where that fails; the class,
    attributes and state dict stay as they are). Returns ``model``.

    Segmentors (UPerNet, Swin-Unet): ``encode_decode``, the logits ``(B, K, H, W)`` that ``predict``, sliding
    windows, TTA and Swin-Unet's ``mode='tensor'`` use. RPN: ``extract_feat`` (backbone and FPN); proposal
    decoding and NMS, whose output sizes depend on the data, stay eager. A new input size compiles again.
    """
    for method in ("encode_decode", "extract_feat"):
        if callable(getattr(model, method, None)):
            compile_method(model, method)
            return model
    raise TypeError(f"compile_inference: {type(model).__name__} has neither encode_decode nor extract_feat")


def _dataset_meta(cfg: Config) -> dict:
    """Class names and palette of the config's test dataset class, without reading its files."""
    dataset_cfg = cfg.get("test_dataloader", {}).get("dataset", {})
    dataset_cls = DATASETS.get(dataset_cfg.get("type", "")) if dataset_cfg else None
    meta = dict(getattr(dataset_cls, "METAINFO", {}) or {})
    if dataset_cfg.get("classes"):
        meta["classes"] = list(dataset_cfg["classes"])
    return meta


def test_pipeline_steps(cfg: Config) -> list:
    """The config's ``test_pipeline``, else its test dataset's pipeline."""
    steps = cfg.get("test_pipeline") or cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline")
    if not steps:
        raise ValueError("the config has no test_pipeline (nor test_dataloader.dataset.pipeline) for inference")
    return list(steps)


def inference_model(model: torch.nn.Module, image: str | os.PathLike | np.ndarray):
    """Run the model on one image (a path or an HxWx3 BGR uint8 array), through the config's test pipeline.

    Returns:
        segmentors: a ``SegDataSample`` with ``pred_sem_seg`` ``(1, H, W)`` and ``seg_logits`` ``(K, H, W)`` at
        the image's own size; an RPN: a ``DetDataSample`` whose ``pred_instances`` holds ``bboxes``
        ``(N, 4)`` xyxy in the image's pixels and ``scores`` ``(N,)``, best first, ``N <= max_per_img``.
    """
    steps = [t for t in test_pipeline_steps(model.cfg) if t["type"] not in ("LoadAnnotations", "LoadDetAnnotations")]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got an array of shape {image.shape}")
        steps = [t for t in steps if t["type"] != "LoadImageFromFile"]
        results = dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2], img_path=None)
    else:
        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
        results = dict(img_path=str(image))
    pipeline = Compose([TRANSFORMS.build(t) for t in steps])
    with torch.no_grad():
        data = model.data_preprocessor(pseudo_collate([pipeline(results)]), False)
        return model.predict(data["inputs"], data["data_samples"])[0]
