"""Measure a config's model as a user runs it: latency, throughput and peak memory of inference (``densekit
benchmark``), in the manner of mmsegmentation's ``tools/analysis_tools/benchmark.py`` for its configs.

What is timed: ``model.predict(x)`` under ``torch.inference_mode()`` on a random batch ``x`` ``(B, C, H, W)``
that stands for the data preprocessor's output (image reading, the pipeline and normalisation are not timed):
the backbone, neck and head, then what ``predict`` adds (sliding windows or TTA where the config asks for them,
the resize of the logits and the argmax; an RPN's decoding and NMS). Latency is the median and the min over the
timed runs after warm-up; throughput is the batch over the median. Peak memory is the peak during the warm-up and
timed calls above what was resident before them, i.e. with the model and the batch in memory
(``densekit.inference.timing.call_peak_memory``: the CUDA allocator's on a GPU, this process's resident set on the
CPU, which holds nothing else).

Modes: ``fp32`` as built; ``bf16`` under ``torch.autocast`` bfloat16; ``channels_last`` with the model and the
batch in ``torch.channels_last``; ``compile`` with the inference path compiled (``compile_inference``, eager
with a warning where that fails; compiled before the timed runs). The CPU fast paths (``densekit.accel``) are
installed on the CPU unless ``accel=False``, as ``init_model`` does.

Read top to bottom: settings, building the model, the input, the timed step, the measurement, the table.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import accel as cpu_accel
from ..engine.compile import CompiledOrEager, compile_status
from ..engine.config import load_config
from ..models.builder import build_model
from .api import compile_inference, init_model
from .timing import PeakMemory, Stats, call_peak_memory, time_fn

MODES = ("fp32", "bf16", "channels_last", "compile")
DEVICES = ("cpu", "cuda")


def check_mode_and_device(mode: str, device: str) -> None:
    """Raise ValueError for a mode or device outside ``MODES`` / ``DEVICES``, RuntimeError for CUDA without one."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch.cuda.is_available() is False")


@dataclass(frozen=True)
class BenchmarkSettings:
    """How the model is measured (``densekit benchmark``'s arguments).

    Args:
        shape: input height and width.
        batch: images per call.
        runs: timed calls (median and min are reported).
        warmup: untimed calls first.
        mode: one of ``MODES``.
        device: ``'cpu'`` or ``'cuda'``.
        accel: install the CPU fast paths (``densekit.accel.optimize``); they apply on the CPU only.
    """

    shape: tuple[int, int] = (512, 512)
    batch: int = 1
    runs: int = 10
    warmup: int = 3
    mode: str = "fp32"
    device: str = "cpu"
    accel: bool = True

    def __post_init__(self) -> None:
        check_mode_and_device(self.mode, self.device)
        if min(*self.shape, self.batch, self.runs) < 1 or self.warmup < 0:
            raise ValueError(f"shape, batch and runs must be positive and warmup >= 0, got shape {self.shape}, "
                             f"batch {self.batch}, runs {self.runs}, warmup {self.warmup}")

    @property
    def accel_on(self) -> bool:
        """Whether the CPU fast paths are installed: asked for, and on the CPU."""
        return self.accel and self.device == "cpu"


def build_benchmark_model(config: str | os.PathLike, settings: BenchmarkSettings, checkpoint: str | None = None,
                          cfg_options: dict | None = None, unsafe_load: bool = False) -> nn.Module:
    """The config's model in eval mode on ``settings.device``: with ``checkpoint``'s weights (``init_model``:
    converted, strictly loaded), else randomly initialised without the backbone's ``pretrained`` file. The CPU
    fast paths are installed where ``settings.accel_on`` and removed otherwise, whatever ``init_model`` chose."""
    if checkpoint is not None:
        model = init_model(str(config), checkpoint, device=settings.device, cfg_options=cfg_options,
                           unsafe_load=unsafe_load)
    else:
        model = build_model(load_config(config, cfg_options), pretrained=False).to(settings.device).eval()
    return cpu_accel.optimize(model) if settings.accel_on else cpu_accel.restore(model)


def input_channels(model: nn.Module) -> int:
    """The channels the model takes: its data preprocessor's (one mean per channel), else 3."""
    mean = getattr(getattr(model, "data_preprocessor", None), "mean", None)
    return int(mean.numel()) if isinstance(mean, torch.Tensor) else 3


def random_batch(model: nn.Module, settings: BenchmarkSettings, seed: int = 0) -> torch.Tensor:
    """A normalised random batch ``(B, C, H, W)`` on the device, channels-last in ``channels_last`` mode."""
    x = torch.randn(settings.batch, input_channels(model), *settings.shape,
                    generator=torch.Generator().manual_seed(seed)).to(settings.device)
    return x.contiguous(memory_format=torch.channels_last) if settings.mode == "channels_last" else x


def inference_step(model: nn.Module, x: torch.Tensor, settings: BenchmarkSettings) -> Callable[[], Any]:
    """One ``model.predict(x)`` as the mode runs it; applies the mode to ``model`` in place (``channels_last``
    converts it, ``compile`` compiles its inference path: see ``compile_inference``)."""
    if settings.mode == "channels_last":
        model.to(memory_format=torch.channels_last)
    if settings.mode == "compile":
        compile_inference(model)

    def step() -> Any:
        autocast = (torch.autocast(settings.device, dtype=torch.bfloat16) if settings.mode == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            return model.predict(x)

    return step


def compiled_status(model: nn.Module) -> str | None:
    """``'compiled'`` or ``'eager (<reason>)'`` of the method ``compile_inference`` compiled; None if none."""
    compiled = [value for value in vars(model).values() if isinstance(value, CompiledOrEager)]
    return compile_status(compiled[0]) if compiled else None


@dataclass
class BenchmarkResult:
    """What ``benchmark_model`` measured: the timed calls, the peak memory, the compile outcome."""

    name: str  # the config, as the user named it
    settings: BenchmarkSettings
    channels: int
    stats: Stats
    peak: PeakMemory  # over the warm-up and timed calls
    compiled: str | None = None  # compile mode: 'compiled' or 'eager (<reason>)'

    @property
    def images_per_s(self) -> float:
        return self.settings.batch / self.stats.median

    def table(self) -> str:
        """The measurement as a markdown table, then what was timed and how memory was measured."""
        s = self.settings
        row = {"config": self.name, "mode": s.mode, "device": s.device, "batch": s.batch,
               "input": f"{s.batch}x{self.channels}x{s.shape[0]}x{s.shape[1]}", "accel": "on" if s.accel_on else "off",
               "median ms": f"{1e3 * self.stats.median:.1f}", "min ms": f"{1e3 * self.stats.min:.1f}",
               "images/s": f"{self.images_per_s:.2f}", "peak MiB above resident": f"{self.peak.bytes / 2**20:.1f}"}
        if self.compiled is not None:
            row["torch.compile"] = self.compiled
        return (f"{markdown_table(list(row), [list(row.values())])}\n\n"
                f"timed: model.predict on a random normalised batch under torch.inference_mode(), {s.warmup} "
                f"warm-up call(s), then {len(self.stats.times)} timed; images/s = batch / median\n"
                f"peak memory: {self.peak.method}")


def benchmark_model(model: nn.Module, settings: BenchmarkSettings, name: str = "model") -> BenchmarkResult:
    """Time ``model.predict`` in ``settings.mode`` (warm-up, timed runs) and measure the peak memory of those
    calls above what was resident before them (model, batch). ``model`` is changed in place by the mode
    (``inference_step``). In ``compile`` mode one untimed, unmeasured call more compiles first."""
    x = random_batch(model, settings)
    step = inference_step(model, x, settings)
    if settings.mode == "compile":
        step()  # compiles: neither compile time nor the compiler's memory is inference's
    times: list[float] = []
    peak = call_peak_memory(lambda: times.extend(time_fn(step, settings.warmup, settings.runs, settings.device)),
                            settings.device)
    return BenchmarkResult(name, settings, x.shape[1], Stats(times), peak, compiled_status(model))


def benchmark_config(config: str | os.PathLike, settings: BenchmarkSettings, checkpoint: str | None = None,
                     cfg_options: dict | None = None, unsafe_load: bool = False) -> BenchmarkResult:
    """Build the model of ``config`` (a file or a shipped config's name) and measure it (``benchmark_model``)."""
    model = build_benchmark_model(config, settings, checkpoint, cfg_options, unsafe_load)
    return benchmark_model(model, settings, str(config))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
