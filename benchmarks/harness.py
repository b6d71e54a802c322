"""Benchmark machinery shared by the peer suites: machine info, FLOPs, peak RSS in a process of its own, markdown
tables and docs sections, the modes (fp32, bf16, channels_last, compile), agreement checks and the accel switch.

DESIGN.md §7: benchmarks compare densekit with a peer implementation of the same model and
weights in the same process, A/B interleaved, and report medians and ratios. The timing itself
(``time_fn``, ``compare``, ``Stats``, peak memory) is the package's, ``densekit.inference.timing``,
which ``densekit benchmark`` measures with too. Read top to bottom: rates and FLOPs, peak RSS,
machine info, markdown, the docs-section writer, the suite configuration and result, the modes,
the accel switch, agreement and results tables, the backbone helpers the backbone suites share.

A suite is a function ``(BenchConfig) -> SuiteResult`` listed in ``benchmarks.run.SUITES``; it
builds its cases (callables running one step), checks that they agree, times them with
``compare`` and renders a markdown section. ``python -m benchmarks`` (``benchmarks/run.py``) parses
arguments, calls ``run_suite`` and, with ``--write``, ``update_section`` on ``docs/benchmarks.md``.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from densekit import accel
from densekit.engine.compile import compile_status, compile_with_fallback
from densekit.fileio import save_atomically
from densekit.inference.benchmark import DEVICES, MODES, check_mode_and_device, markdown_table  # noqa: F401 (the suites' vocabulary)
from densekit.inference.timing import Stats, time_fn

# --------------------------------------------------------------------------- rates and FLOPs

def gemm_rate(size: int = 2048, runs: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """The machine's matmul rate in FLOP/s: median time of a ``size x size`` matmul (``2 size^3`` FLOPs)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / statistics.median(time_fn(lambda: a @ b, warmup=2, runs=runs, device=device))


def _fused_linear_flops(x_shape: Sequence[int], *args: Any, out_shape: Sequence[int], **kwargs: Any) -> int:
    """``mkldnn::_linear_pointwise`` (both overloads): ``(M, K) -> (M, N)``, 2 M K N."""
    return 2 * math.prod(out_shape) * x_shape[-1]


def _cpu_sdpa_flops(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int], *args: Any,
                    out_shape: Any = None, **kwargs: Any) -> int:
    """``aten::_scaled_dot_product_flash_attention_for_cpu``: counted as torch counts the CUDA kernels."""
    return sdpa_flop_count(q_shape, k_shape, v_shape)


# torch's counter knows neither op, so without these the fused CPU inference path (densekit.accel.fused_linear,
# PyTorch's CPU flash attention) would count as no work at all.
_CPU_FLOP_FORMULAS = {torch.ops.mkldnn._linear_pointwise: _fused_linear_flops,
                      torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def model_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them (2 per multiply-add of matmuls,
    convolutions and attention, the oneDNN fused linears and CPU flash attention included; elementwise work is not
    counted)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_FLOP_FORMULAS) as counter:
        fn()
    return counter.get_total_flops()



_PEAK_RSS_SCRIPT = """
import importlib, json, sys
from densekit.inference.timing import RSS_PEAK, cpu_peak_memory
module, name, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
step = getattr(importlib.import_module(module), name)(**args)  # builds the model and inputs, returns one step
step()  # warm-up: allocator pools, lazily built caches
peak = cpu_peak_memory(step)
if peak.method != RSS_PEAK:
    sys.exit('no /proc/self/clear_refs to reset the peak resident set: ' + peak.method)
print(json.dumps({'peak_above_resident': peak.bytes}))
"""


def peak_rss_above_resident(module: str, factory: str, kwargs: dict, threads: int | None = None) -> int:
    """Peak resident memory (bytes) one call of a step needs above what is resident before it, measured in a
    separate process (on the CPU no allocator tracks peaks, and processes do not share pools): the process
    builds the step with ``module.factory(**kwargs)``, runs it once to warm up, then measures one more call with
    ``densekit.inference.timing.cpu_peak_memory`` (the kernel's peak-RSS counter reset through
    ``/proc/self/clear_refs``, then ``VmHWM - VmRSS``; Linux)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads or torch.get_num_threads()))
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, module, factory, json.dumps(kwargs)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"peak-RSS process for {module}.{factory} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_above_resident"]


# --------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, str]:
    """What a reader needs to compare numbers across machines, as ``{label: value}``."""
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "CPU": cpu_model(),
        "CPU cores (os.cpu_count)": str(os.cpu_count()),
        "torch threads (get_num_threads)": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    if device == "cuda":
        info["GPU"] = torch.cuda.get_device_name()
        info["CUDA"] = str(torch.version.cuda)
    return info


def load_average() -> str:
    """1/5/15-minute load averages, to show whether the machine was busy during a run."""
    with contextlib.suppress(OSError):
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return "n/a"


@dataclass
class CpuSnapshot:
    """Wall clock, CPU seconds used by the whole machine and by this process, at one moment."""

    wall: float
    machine_busy: float | None
    own: float


def cpu_snapshot() -> CpuSnapshot:
    """Take a ``CpuSnapshot`` (machine-wide busy time from /proc/stat; None where unavailable)."""
    busy = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return CpuSnapshot(time.perf_counter(), busy, own.user + own.system)


def background_cpu(before: CpuSnapshot, after: CpuSnapshot) -> str:
    """How busy other processes kept the CPUs between two snapshots, e.g. ``'0.1 cores (2%)'``:
    the machine's busy time minus this process's, over the wall time. Near 0 = a quiet run."""
    if before.machine_busy is None or after.machine_busy is None:
        return "n/a"
    wall = max(after.wall - before.wall, 1e-9)
    others = max(0.0, (after.machine_busy - before.machine_busy) - (after.own - before.own)) / wall
    return f"{others:.2f} cores ({100 * others / (os.cpu_count() or 1):.0f}% of the machine)"


# --------------------------------------------------------------------------- markdown



def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


DOC_HEADER = (
    "# densekit benchmarks\n\n"
    "Written by `python -m benchmarks --write` (run from a checkout); each section between\n"
    "`<!-- bench:NAME -->` markers is replaced by its suite and leaves the others alone. Every section\n"
    "records the exact command, the machine and the load average, so numbers can be reproduced and compared.\n"
)


def update_section(path: str | os.PathLike, name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:name -->`` and ``<!-- /bench:name -->`` in ``path``.

    A missing file gets a header; a missing section is appended. Other sections and any text
    outside markers are kept byte for byte. Written to a temporary file and renamed over
    ``path`` (``os.replace``), so a crash never leaves a half-written document.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else DOC_HEADER
    begin, end = _markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    save_atomically(path, lambda tmp: Path(tmp).write_text(text))


# --------------------------------------------------------------------------- suites


@dataclass
class BenchConfig:
    """What every suite is run with (the CLI's arguments)."""

    size: tuple[int, int] = (512, 512)
    batch: int = 1
    runs: int = 7
    warmup: int = 2
    mode: str = "fp32"
    device: str = "cpu"
    seed: int = 0
    peak_rss: bool = True  # CPU training steps: peak RSS in separate processes (a minute or two per model)
    peak_tflops: float | None = None  # CUDA: the card's dense bf16 peak for MFU, else looked up (benchmarks.mfu)

    def __post_init__(self) -> None:
        check_mode_and_device(self.mode, self.device)
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ValueError(f"peak_tflops must be positive, got {self.peak_tflops!r}")


@dataclass
class SuiteResult:
    """A suite's measurements and its rendered markdown (title, tables, notes)."""

    name: str
    title: str
    stats: dict[str, Stats]
    markdown: str
    extra: dict[str, Any] = field(default_factory=dict)


def section_name(suite: str, config: BenchConfig) -> str:
    """Docs section key: one section per suite, device and mode, e.g. ``swin_t_backbone.cpu.fp32``."""
    return f"{suite}.{config.device}.{config.mode}"


def render_section(result: SuiteResult, config: BenchConfig, command: str, load_before: str, load_after: str,
                   background: str = "n/a") -> str:
    """The markdown of one docs section: title, command, machine and load, the suite's own text."""
    info = machine_info(config.device)
    info["load average before / after (1, 5, 15 min)"] = f"{load_before} / {load_after}"
    info["other processes' CPU use during the run"] = background
    machine = markdown_table(["machine", "value"], list(info.items()))
    return (
        f"## {result.title}\n\n"
        f"```\n{command}\n```\n\n"
        f"{machine}\n\n"
        f"{result.markdown.strip()}\n"
    )


# --------------------------------------------------------------------------- modes
# fp32: as built. bf16: fp32 weights under torch.autocast(bfloat16). channels_last: fp32, models and inputs in
# torch.channels_last. compile: fp32, each timed step through torch.compile with a fallback to eager. Every suite
# applies a mode through these helpers to densekit and its peers alike.


def prepare_model(model: nn.Module, mode: str) -> nn.Module:
    """``model`` as ``mode`` runs it, changed in place and returned: ``channels_last`` moves its 4-D parameters
    and buffers (convolution weights) to ``torch.channels_last``; the other modes leave it as it is (``bf16``
    autocasts at call time, ``compile`` compiles the step: see ``prepare_step``)."""
    if mode == "channels_last":
        model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """An image batch ``(B, C, H, W)`` as ``mode`` feeds it: channels-last for ``channels_last``, else ``x``."""
    return x.contiguous(memory_format=torch.channels_last) if mode == "channels_last" else x


def prepare_step(fn: Callable[[], Any], mode: str, name: str) -> Callable[[], Any]:
    """A step (one forward, one training step) as ``mode`` runs it: for ``compile``, ``fn`` compiled by
    ``densekit.engine.compile.compile_with_fallback`` (``torch.compile``, inductor, default options; eager with one
    warning naming ``name`` and the reason when that fails), else ``fn`` itself. Compilation happens at the
    step's first call, which every suite makes before its timed rounds (agreement run or warm-up)."""
    return compile_with_fallback(fn, name) if mode == "compile" else fn


def inference_case(fn: Callable[[], Any], mode: str, device: str) -> Callable[[], Any]:
    """Wrap one forward in ``torch.inference_mode`` and, for ``bf16``, ``torch.autocast``."""

    def run() -> Any:
        autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if mode == "bf16"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            return fn()

    return run


def compile_statuses(compiled: dict[str, Any]) -> dict[str, str]:
    """``{case: 'compiled' | 'eager (reason)' | ...}`` of the steps (or models) ``prepare_step`` /
    ``maybe_compile`` compiled, read after the run (a fallback during the timed rounds shows too). A case
    compiled in parts (a list of them) reads as its first part that did not compile, else ``'compiled'``."""

    def status(obj: Any) -> str:
        parts = [compile_status(part) for part in (obj if isinstance(obj, list) else [obj])]
        return next((s for s in parts if s != "compiled"), "compiled")

    return {name: status(obj) for name, obj in compiled.items()}


def mode_column(mode: str, statuses: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """The extra results-table column of ``compile`` (``([header], {case: [cell]})``); none for other modes."""
    if mode != "compile":
        return [], {}
    return ["torch.compile"], {n: ["compiled" if s == "compiled" else "eager fallback"] for n, s in statuses.items()}


COMPILED_STEPS = ("every timed step (a forward, a training step) is compiled by "
                  "`densekit.engine.compile.compile_with_fallback`")


def mode_note(mode: str, statuses: dict[str, str], compiled_what: str = COMPILED_STEPS) -> str:
    """The paragraph a section adds for ``channels_last`` and ``compile``: what the mode did and, for
    ``compile``, which cases ran compiled and which fell back, with the reason. Empty for ``fp32`` and
    ``bf16``, whose sections read as they always have."""
    if mode == "channels_last":
        return ("Mode `channels_last`: fp32, every model moved to `torch.channels_last` (`model.to(memory_format="
                "torch.channels_last)`: its 4-D weights, i.e. the convolutions) and every input image batch made "
                "channels-last (`x.contiguous(memory_format=torch.channels_last)`), densekit and the peers alike.")
    if mode != "compile":
        return ""
    fell_back = {n: s for n, s in statuses.items() if s != "compiled"}
    outcome = ("Every case ran compiled." if not fell_back else "Fell back to eager: " + "; ".join(
        f"`{n}`: {s}" for n, s in fell_back.items()) + ". Those rows are eager timings.")
    return (f"Mode `compile`: fp32; {compiled_what} (`torch.compile`, default inductor backend and options; "
            "eager with a warning where compilation fails), densekit and the peers alike. Compilation happens at "
            "the first call (and again at each new input shape), before the timed rounds (in the agreement run "
            f"or a warm-up round), so compile time is not in the timings. {outcome}")


# --------------------------------------------------------------------------- agreement and results tables


def max_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference over paired tensors (compared in fp32)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outputs against {len(b)}")
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise ValueError(f"output shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def results_table(stats: dict[str, Stats], peer: str, diffs: dict[str, Sequence[str]] | None = None,
                  diff_headers: Sequence[str] = ()) -> str:
    """One row per case: median, min, ratio to ``peer`` (median over median), extra diff columns,
    and peak memory when it was measured."""
    with_mem = any(s.peak_mem is not None for s in stats.values())
    headers = ["implementation", "median ms", "min ms", f"ratio vs {peer}", *diff_headers]
    if with_mem:
        headers.append("peak MiB above resident")
    rows = []
    for name, s in stats.items():
        row = [name, _ms(s.median), _ms(s.min), f"{s.median / stats[peer].median:.2f}"]
        row += list((diffs or {}).get(name, ["-"] * len(diff_headers)))
        if with_mem:
            row.append("-" if s.peak_mem is None else f"{s.peak_mem / 2**20:.0f}")
        rows.append(row)
    return markdown_table(headers, rows)


# --------------------------------------------------------------------------- the accel switch
# densekit's model runs with its CPU fast paths (densekit.accel.optimize, as init_model installs them on the CPU);
# the "accel off" row is the same model, same weights, without them, timed in the same rounds, so the switch's
# gain shows. CPU only: the fast paths apply to CPU tensors, and init_model installs them only there.

ACCEL_OFF = " (accel off)"  # appended to the name of a densekit case


def accel_rows(device: str) -> bool:
    """Whether a suite on ``device`` times densekit with and without ``densekit.accel`` (the CPU)."""
    return device == "cpu"


def with_accel_off(name: str, model: nn.Module, device: str) -> dict[str, nn.Module]:
    """``{name: model}`` with ``densekit.accel.optimize`` applied in place and, on the CPU, ``{name + ACCEL_OFF:
    a deep copy made before}``: the same weights without the fast paths. Call it before applying a mode (a
    compiled module does not deep-copy)."""
    if not accel_rows(device):
        return {name: model}
    plain = copy.deepcopy(model)
    return {name: accel.optimize(model), name + ACCEL_OFF: accel.restore(plain)}


ACCEL_WHAT = ("`densekit` runs with its CPU fast paths installed (`densekit.accel.optimize(model)`, as `init_model` "
              "does on the CPU); `densekit (accel off)` is the same model with the same weights without them, timed "
              "in the same rounds")


def accel_ratio(stats: dict[str, Stats], name: str = "densekit") -> str:
    """``'**0.80x** (40.0 ms vs 50.0 ms)'``: the switch's gain, case ``name`` over its accel-off row at the
    medians, or ``''`` where the suite has no such row (off the CPU)."""
    off = name + ACCEL_OFF
    if name not in stats or off not in stats:
        return ""
    on_s, off_s = stats[name].median, stats[off].median
    return f"**{on_s / off_s:.2f}x** ({_ms(on_s)} ms vs {_ms(off_s)} ms)"


# --------------------------------------------------------------------------- backbone suites (Swin-T, ConvNeXt-T)

AGREEMENT_TOL = 1e-4


def backbone_forwards(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """One forward per backbone, each returning its NCHW maps of ``x``: timm's models (names starting with
    ``timm``) through ``forward_intermediates(x, intermediates_only=True)``, densekit's through ``model(x)``."""

    def forward(name: str, model: nn.Module) -> Callable[[], list[torch.Tensor]]:
        if name.startswith("timm"):
            return lambda: model.forward_intermediates(x, intermediates_only=True)
        return lambda: model(x)

    return {name: forward(name, model) for name, model in models.items()}


def backbone_cases(models: dict[str, nn.Module], x: torch.Tensor, config: BenchConfig
                   ) -> tuple[dict[str, Callable[[], list[torch.Tensor]]], dict[str, Callable[[], Any]]]:
    """The timed cases of a backbone suite in ``config.mode``: every model and ``x`` ``(B, 3, H, W)`` prepared
    (``prepare_model``, in place, and ``prepare_input``), every forward of ``backbone_forwards`` through
    ``prepare_step`` and ``inference_case``. Returns (cases, the prepared steps, for ``compile_statuses``)."""
    models = {name: prepare_model(model, config.mode) for name, model in models.items()}
    x = prepare_input(x, config.mode)
    steps = {n: prepare_step(f, config.mode, n) for n, f in backbone_forwards(models, x).items()}
    return {n: inference_case(step, config.mode, config.device) for n, step in steps.items()}, steps


def case_diffs_against_timm(cases: dict[str, Callable[[], list[torch.Tensor]]]) -> dict[str, float]:
    """Max abs difference of every case's maps against those of ``cases['timm']``, calling each case once."""
    reference = cases["timm"]()
    return {name: max_abs_diff(fn(), reference) for name, fn in cases.items()}


def diffs_against_timm(models: dict[str, nn.Module], x: torch.Tensor, mode: str, device: str) -> dict[str, float]:
    """Max abs difference of every backbone's maps against those of ``models['timm']``, at input ``x`` in ``mode``."""
    return case_diffs_against_timm({n: inference_case(f, mode, device)
                                    for n, f in backbone_forwards(models, x).items()})


def check_agreement(diffs: dict[str, float], what: str) -> None:
    """Raise AssertionError naming every case whose max abs difference exceeds ``AGREEMENT_TOL``."""
    bad = {name: f"{d:.2e}" for name, d in diffs.items() if not d <= AGREEMENT_TOL}  # NaN fails too
    if bad:
        raise AssertionError(f"{what} disagree beyond {AGREEMENT_TOL}: {bad}")
