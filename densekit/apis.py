"""The Python API behind the tools, where users import it (as ``mmseg.apis``): configs, training, inference.

``tools/train.py``, ``tools/test.py`` and ``tools/infer.py`` only parse arguments and call these. The code lives in
``densekit.engine`` (configs, runners) and ``densekit.inference`` (models from checkpoints, predictions).
"""
from __future__ import annotations

from mmengine.config import Config, DictAction

from .engine.config import load_config
from .engine.runner import build_runner, safe_loading, test, train
from .inference.api import compile_inference, inference_model, init_model
from .models.builder import build_model

__all__ = ["Config", "DictAction", "build_model", "build_runner", "compile_inference", "inference_model",
           "init_model", "load_config", "safe_loading", "test", "train"]
