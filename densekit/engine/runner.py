"""mmengine Runners from densekit configs: safe checkpoint loading, densekit's hooks, CPU distributed runs,
and the ``train`` / ``test`` entry points of the tools."""
from __future__ import annotations

import contextlib
import os
import pickle
import time
from pathlib import Path

import torch
from mmengine.config import Config

from ..convert import CheckpointError, checkpoint_safe_globals, is_refusal, refused_message
from .config_check import ConfigError
from .console import build_quietly


@contextlib.contextmanager
def safe_loading(unsafe_load: bool = False, source: str = "the checkpoint"):
    """Context for mmengine's own ``torch.load`` (resume, ``load_from``).

    By default every ``torch.load`` inside is ``weights_only`` (whatever the environment says) and
    accepts, besides tensors, only the metadata types mmengine and densekit write (``HistoryBuffer``,
    numpy scalars); a refused file raises ``CheckpointError`` naming ``source``, the offending types and
    the opt-in. ``unsafe_load=True`` (``--unsafe-load``) unpickles fully, for files you trust.
    """
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
                 launcher: str = "none", deterministic: bool = False, accel: bool | None = None):
    """An mmengine ``Runner`` for ``cfg`` with the tool's overrides applied and ``NonFiniteLossHook`` (and,
    without CUDA, ``CpuMemoryHook``) added to ``custom_hooks`` unless the config lists them already.

    ``accel``: install densekit's CPU fast paths on the model before the run (``AccelHook``); None follows the
    config's top-level ``accel`` key (default False: CPU recipes set ``accel = True``).

    ``deterministic`` sets ``randomness.deterministic`` (mmengine then calls
    ``torch.use_deterministic_algorithms(True)`` and turns cuDNN benchmarking off), so a run repeats bit for bit
    on the same machine. A distributed ``launcher`` without CUDA uses the gloo backend: nccl needs GPUs.
    """
    from mmengine.runner import Runner

    cfg.work_dir = work_dir or cfg.get("work_dir") or os.path.join("work_dirs", Path(cfg.filename or "run").stem)
    cfg.launcher = launcher
    cfg.custom_hooks = _with_densekit_hooks(cfg, _accel_requested(cfg, accel))
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
    _wait_for_a_new_second()
    runner = Runner.from_cfg(cfg)
    _last_timestamp[0] = runner.timestamp
    return runner


_last_timestamp = [""]  # the timestamp of the last Runner this process built (mmengine's %Y%m%d_%H%M%S)


def _wait_for_a_new_second() -> None:
    """Wait, at most a second, until the clock has left the second of the last Runner's timestamp.

    mmengine names a run's log folder (``work_dir/<timestamp>``), logger, message hub and visualizer after the
    config file and the second the run starts, and hands the next Runner an existing instance of the same name: a
    second run built in the same second of one process (checkpoints evaluated in a loop, a test suite) would write
    its log and ``vis_data`` into the first run's folder.
    """
    while time.strftime("%Y%m%d_%H%M%S") == _last_timestamp[0]:
        time.sleep(1.0 - time.time() % 1.0 + 1e-3)


def _accel_requested(cfg: Config, accel: bool | None) -> bool:
    """``accel`` if given, else the config's ``accel`` key (True or False; default False)."""
    if accel is not None:
        return accel
    value = cfg.get("accel", False)
    if not isinstance(value, bool):
        raise ConfigError(f"config key 'accel' must be True or False, got {value!r}")
    return value


def _with_densekit_hooks(cfg: Config, accel: bool) -> list:
    """``cfg.custom_hooks`` plus the hooks densekit adds, each unless the config lists it already."""
    hooks = list(cfg.get("custom_hooks") or [])
    names = {(str(h.get("type", "")) if isinstance(h, dict) else type(h).__name__).split(".")[-1] for h in hooks}
    # Every run stops at the first NaN/Inf loss before a checkpoint of the broken state is written.
    wanted = ["NonFiniteLossHook"]
    if not torch.cuda.is_available():
        wanted.append("CpuMemoryHook")  # mmengine logs memory on CUDA only
    if accel:
        wanted.append("AccelHook")
    return hooks + [dict(type=name) for name in wanted if name not in names]


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


def build_train_runner(cfg: Config, work_dir: str | None = None, resume: bool = False, amp: bool = False,
                       launcher: str = "none", deterministic: bool = False, quiet: bool = False):
    """``build_runner``; ``quiet`` keeps mmengine's preamble (environment, config, hook order, weight
    initialisation) in the log file and off the terminal until ``runner.train()`` starts (``console.build_quietly``)."""
    def build():
        return build_runner(cfg, work_dir, resume, amp, launcher, deterministic)

    return build_quietly(build) if quiet else build()


def run_train(runner, cfg: Config, unsafe_load: bool = False):
    """``runner.train()`` with resumed and ``load_from`` checkpoints loading ``weights_only`` unless
    ``unsafe_load`` (see ``safe_loading``); returns the runner."""
    with safe_loading(unsafe_load, _checkpoint_source(cfg)):
        runner.train()
    return runner


def train(cfg: Config, work_dir: str | None = None, resume: bool = False, amp: bool = False,
          launcher: str = "none", unsafe_load: bool = False, deterministic: bool = False, quiet: bool = False):
    """Train with mmengine's Runner; returns the runner (its ``message_hub`` holds the last metrics).

    Resumed and ``load_from`` checkpoints load ``weights_only`` unless ``unsafe_load`` (see ``safe_loading``);
    ``deterministic`` as in ``build_runner``, ``quiet`` as in ``build_train_runner``.
    """
    runner = build_train_runner(cfg, work_dir, resume, amp, launcher, deterministic, quiet)
    return run_train(runner, cfg, unsafe_load)


def test(cfg: Config, checkpoint: str, work_dir: str | None = None, tta: bool = False,
         launcher: str = "none", unsafe_load: bool = False, accel: bool | None = None) -> dict:
    """Evaluate ``checkpoint`` on the config's test set; ``tta`` turns on flip + multi-scale inference.
    ``checkpoint`` loads ``weights_only`` unless ``unsafe_load`` (see ``safe_loading``). ``accel``: run with
    densekit's CPU fast paths (``densekit.accel``); None: when the model runs on the CPU (no CUDA)."""
    cfg.load_from = checkpoint
    if tta:
        cfg.model.test_cfg = dict(cfg.model.get("test_cfg", {}),
                                  tta=dict(scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], flip=True))
    accel = not torch.cuda.is_available() if accel is None else accel
    runner = build_runner(cfg, work_dir, launcher=launcher, accel=accel)
    with safe_loading(unsafe_load, checkpoint):
        return runner.test()
