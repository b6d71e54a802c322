"""Python API behind the tools: build a runner from a config, train, test, init a model, infer.

``tools/train.py``, ``tools/test.py`` and ``tools/infer.py`` only parse arguments and call these.
"""
from __future__ import annotations

import contextlib
import copy
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for the tools)
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope

from .config_check import check_config
from .registry import MODELS, TRANSFORMS


def load_config(config: str | Config, cfg_options: dict | None = None) -> Config:
    """Read a config file (or take a Config) and merge ``--cfg-options``; a clear error for a missing file.

    Misspelt keys (``model.decode_haed``, ``train_dataloader.batch_sise``, ``param_schedular``) raise
    ``densekit.config_check.ConfigError`` naming the key and the nearest valid one.
    """
    if isinstance(config, Config):
        cfg = config
    else:
        if not Path(config).is_file():
            raise FileNotFoundError(f"config file {config} does not exist (configs live in configs/*.py)")
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.setdefault("default_scope", "densekit")
    check_config(cfg)
    return cfg


@contextlib.contextmanager
def safe_loading(unsafe_load: bool = False, source: str = "the checkpoint"):
    """Context for mmengine's own ``torch.load`` (resume, ``load_from``).

    By default every ``torch.load`` inside is ``weights_only`` (whatever the environment says) and
    accepts, besides tensors, only the metadata types mmengine and densekit write (``HistoryBuffer``,
    numpy scalars); a refused file raises ``CheckpointError`` naming ``source``, the offending types and
    the opt-in. ``unsafe_load=True`` (``--unsafe-load``) unpickles fully, for files you trust.
    """
    from .convert import CheckpointError, checkpoint_safe_globals, is_refusal, refused_message

    # mmengine calls torch.load without weights_only, so torch's own switch decides; it reads these
    # variables at each call. Scoped and restored, so nothing outlives the run.
    force = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if unsafe_load else {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    saved = {name: os.environ.pop(name, None) for name in _TORCH_LOAD_SWITCHES}
    os.environ.update(force)
    try:
        with checkpoint_safe_globals():
            yield
    except pickle.UnpicklingError as error:
        if not is_refusal(error):
            raise
        raise CheckpointError(refused_message(source, error)) from error
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


_TORCH_LOAD_SWITCHES = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


def _checkpoint_source(cfg: Config) -> str:
    if cfg.get("load_from"):
        return str(cfg.load_from)
    return f"the latest checkpoint in {cfg.work_dir}" if cfg.get("resume") else "the checkpoint"


def build_runner(cfg: Config, work_dir: str | None = None, resume: bool = False, amp: bool = False,
                 launcher: str = "none", deterministic: bool = False):
    """An mmengine ``Runner`` for ``cfg`` with the tool's overrides applied and ``NonFiniteLossHook`` (and,
    without CUDA, ``CpuMemoryHook``) added to ``custom_hooks`` unless the config lists them already.

    ``deterministic`` sets ``randomness.deterministic`` (mmengine then calls
    ``torch.use_deterministic_algorithms(True)`` and turns cuDNN benchmarking off), so a run repeats bit for bit
    on the same machine. A distributed ``launcher`` without CUDA uses the gloo backend: nccl needs GPUs.
    """
    from mmengine.runner import Runner

    cfg.work_dir = work_dir or cfg.get("work_dir") or os.path.join("work_dirs", Path(cfg.filename or "run").stem)
    cfg.launcher = launcher
    hooks = list(cfg.get("custom_hooks") or [])
    names = [str(h.get("type", "")) if isinstance(h, dict) else type(h).__name__ for h in hooks]
    if not any(name.split(".")[-1] == "NonFiniteLossHook" for name in names):
        # Every run stops at the first NaN/Inf loss before a checkpoint of the broken state is written.
        hooks.append(dict(type="NonFiniteLossHook"))
    if not torch.cuda.is_available() and not any(name.split(".")[-1] == "CpuMemoryHook" for name in names):
        hooks.append(dict(type="CpuMemoryHook"))  # mmengine logs memory on CUDA only
    cfg.custom_hooks = hooks
    if resume:
        cfg.resume = True
    if deterministic:
        cfg.randomness = dict(cfg.get("randomness") or {}, deterministic=True)
        cfg.randomness.setdefault("seed", 0)
        cfg.env_cfg = dict(cfg.get("env_cfg") or {}, cudnn_benchmark=False)
        # cuBLAS is deterministic only with a fixed workspace (torch raises otherwise on CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if launcher != "none" and not torch.cuda.is_available():
        _init_cpu_distributed(cfg, launcher)
    if amp:
        if not torch.cuda.is_available():
            raise SystemExit("--amp uses mmengine's AmpOptimWrapper, which needs a GPU; run without --amp on CPU")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    return Runner.from_cfg(cfg)


def _init_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start the gloo process group of a CPU-only distributed run before the Runner does.

    mmengine's launchers call ``torch.cuda.set_device`` before ``init_process_group`` whatever the backend,
    which fails without a GPU; the Runner skips its own initialisation when a group already exists. torchrun
    (``--launcher pytorch``) sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, which ``env://``
    reads. mmengine's DDP wrapper is also given ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU
    module: the wrapper config gets ``device_ids=None``. The Slurm and MPI launchers stay GPU-only: on CPU
    nodes run torchrun under srun instead.
    """
    import torch.distributed as dist

    env_cfg = cfg.setdefault("env_cfg", {})
    env_cfg["dist_cfg"] = dict(env_cfg.get("dist_cfg") or {}, backend="gloo")  # nccl needs GPUs
    if launcher != "pytorch":
        raise SystemExit(f"--launcher {launcher} needs CUDA GPUs (mmengine selects one per process); on CPU "
                         "nodes launch with torchrun / tools/dist_train.sh (--launcher pytorch)")
    wrapper = dict(cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel", broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False)))
    if wrapper.get("type", "MMDistributedDataParallel") == "MMDistributedDataParallel":
        wrapper.setdefault("device_ids", None)
    cfg.model_wrapper_cfg = wrapper
    if not dist.is_initialized():
        extra = {k: v for k, v in env_cfg["dist_cfg"].items() if k not in ("backend", "init_backend")}
        dist.init_process_group(backend="gloo", **extra)


def train(cfg: Config, work_dir: str | None = None, resume: bool = False, amp: bool = False,
          launcher: str = "none", unsafe_load: bool = False, deterministic: bool = False):
    """Train with mmengine's Runner; returns the runner (its ``message_hub`` holds the last metrics).

    Resumed and ``load_from`` checkpoints load ``weights_only`` unless ``unsafe_load`` (see ``safe_loading``);
    ``deterministic`` as in ``build_runner``.
    """
    runner = build_runner(cfg, work_dir, resume, amp, launcher, deterministic)
    with safe_loading(unsafe_load, _checkpoint_source(cfg)):
        runner.train()
    return runner


def test(cfg: Config, checkpoint: str, work_dir: str | None = None, tta: bool = False,
         launcher: str = "none", unsafe_load: bool = False) -> dict:
    """Evaluate ``checkpoint`` on the config's test set; ``tta`` turns on flip + multi-scale inference.
    ``checkpoint`` loads ``weights_only`` unless ``unsafe_load`` (see ``safe_loading``)."""
    cfg.load_from = checkpoint
    if tta:
        cfg.model.test_cfg = dict(cfg.model.get("test_cfg", {}),
                                  tta=dict(scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True))
    runner = build_runner(cfg, work_dir, launcher=launcher)
    with safe_loading(unsafe_load, checkpoint):
        return runner.test()


def build_model(cfg: Config, pretrained: bool = True) -> torch.nn.Module:
    """The config's ``model``; ``pretrained=False`` skips the backbone's ``pretrained`` weights (a
    whole-model checkpoint will hold them). ``cfg`` itself is left unchanged."""
    init_default_scope(cfg.get("default_scope", "densekit"))
    model_cfg = copy.deepcopy(cfg.model)
    if not pretrained and "pretrained" in model_cfg.get("backbone", {}):
        model_cfg.backbone.pretrained = None
    return MODELS.build(model_cfg)


def init_model(config: str | Config, checkpoint: str | None = None, device: str = "cpu",
               cfg_options: dict | None = None, unsafe_load: bool = False, compile: bool = False) -> torch.nn.Module:
    """Build the config's model, load ``checkpoint`` (safely, strictly), move it to ``device``, set eval mode;
    ``compile=True`` then compiles its inference path with a fallback to eager (``compile_inference``).

    ``checkpoint`` may be a densekit/mmengine checkpoint, a whole mmsegmentation or HuggingFace UperNet
    checkpoint (converted on load, see ``densekit.convert.segmentor``), or for RPN configs an mmdetection or
    torchvision Faster R-CNN checkpoint (``densekit.convert.detector``); keys that do not fit raise
    ``CheckpointError``. The model keeps the config as ``model.cfg``, class names / palette as
    ``model.dataset_meta`` (from the checkpoint, else the config's test dataset) and the
    ``SegmentorReport`` as ``model.load_report``. A ``.pth`` holding anything but tensors and mmengine's
    metadata is refused (``CheckpointError`` naming the types) unless ``unsafe_load=True``.
    """
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, pretrained=checkpoint is None)
    meta: dict = {}
    model.load_report = None
    if checkpoint is not None:
        from mmengine.logging import print_log

        from .convert.segmentor import load_model_checkpoint

        report = load_model_checkpoint(model, checkpoint, unsafe_load=unsafe_load)
        print_log(report.summary(), logger="current")
        meta, model.load_report = report.dataset_meta, report
    model.cfg = cfg
    model.dataset_meta = meta or _dataset_meta(cfg)
    model = model.to(device).eval()
    if compile:
        compile_inference(model)
    return model


def compile_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Compile, in place, the part of ``model`` every inference path runs (``densekit.compile.compile_method``:
    ``torch.compile`` at the first call, eager with one warning naming the reason where that fails; the class,
    attributes and state dict stay as they are). Returns ``model``.

    Segmentors (UPerNet, Swin-Unet): ``encode_decode``, the logits ``(B, K, H, W)`` that ``predict``, sliding
    windows, TTA and Swin-Unet's ``mode='tensor'`` use. RPN: ``extract_feat`` (backbone and FPN); proposal
    decoding and NMS, whose output sizes depend on the data, stay eager. A new input size compiles again.
    """
    from .compile import compile_method

    for method in ("encode_decode", "extract_feat"):
        if callable(getattr(model, method, None)):
            compile_method(model, method)
            return model
    raise TypeError(f"compile_inference: {type(model).__name__} has neither encode_decode nor extract_feat")


def _dataset_meta(cfg: Config) -> dict:
    """Class names and palette of the config's test dataset class, without reading its files."""
    from .registry import DATASETS

    dataset_cfg = cfg.get("test_dataloader", {}).get("dataset", {})
    dataset_cls = DATASETS.get(dataset_cfg.get("type", "")) if dataset_cfg else None
    meta = dict(getattr(dataset_cls, "METAINFO", {}) or {})
    if dataset_cfg.get("classes"):
        meta["classes"] = list(dataset_cfg["classes"])
    return meta


def _test_pipeline(cfg: Config) -> list:
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
    steps = [t for t in _test_pipeline(model.cfg) if t["type"] not in ("LoadAnnotations", "LoadDetAnnotations")]
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
