"""Benchmark machinery: A/B-interleaved timing, machine info, markdown tables, docs sections.

DESIGN.md §7: benchmarks compare densekit with a peer implementation of the same model and
weights in the same process, A/B interleaved, and report medians and ratios. Read top to bottom:
timing, machine info, markdown, the docs-section writer, the suite registry, the modes (fp32, bf16,
channels_last, compile), then the suites.

A suite is a function ``(BenchConfig) -> SuiteResult`` registered with ``@register_suite``; it
builds its cases (callables running one step), checks that they agree, times them with
``compare`` and renders a markdown section. ``tools/benchmark.py`` only parses arguments, calls
``run_suite`` and, with ``--write``, ``update_section`` on ``docs/benchmarks.md``.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densekit import accel
from densekit.engine.compile import compile_status, compile_with_fallback
from densekit.fileio import save_atomically

MODES = ("fp32", "bf16", "channels_last", "compile")
DEVICES = ("cpu", "cuda")


# --------------------------------------------------------------------------- timing


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed_call(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Seconds one call of ``fn`` takes, device work included (CUDA events on ``cuda``)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_fn(fn: Callable[[], Any], warmup: int = 2, runs: int = 7, device: str = "cpu") -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then return the seconds of each of ``runs`` timed calls."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    return [_timed_call(fn, device) for _ in range(runs)]


@dataclass
class Stats:
    """Timings of one case, in seconds; ``peak_mem``: bytes one call allocates at its peak on top
    of what was already allocated (weights, inputs), CUDA only, else None."""

    times: list[float]
    peak_mem: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)


def peak_memory(fn: Callable[[], Any], device: str = "cpu") -> int | None:
    """Peak CUDA memory one call of ``fn`` allocates above what was resident before it (bytes);
    None off CUDA. Resident memory (every benchmarked model's weights) is subtracted so cases
    sharing a process can be compared."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - resident


def compare(
    cases: dict[str, Callable[[], Any]], warmup: int = 2, runs: int = 7, device: str = "cpu"
) -> dict[str, Stats]:
    """Time several cases interleaved: every repetition runs each case once.

    The order alternates between repetitions (A B C, C B A, ...) so that drifting machine state
    (clock, caches, other load) falls on every case alike. Warm-up rounds run first, untimed.
    On CUDA, peak memory of one extra call per case is recorded after the timed runs.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(runs):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].append(_timed_call(cases[name], device))
    return {name: Stats(times[name], peak_memory(cases[name], device)) for name in names}


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
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q_shape, k_shape, v_shape)


# torch's counter knows neither op, so without these the fused CPU inference path (densekit.accel.fused_linear,
# PyTorch's CPU flash attention) would count as no work at all.
_CPU_FLOP_FORMULAS = {torch.ops.mkldnn._linear_pointwise: _fused_linear_flops,
                      torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def model_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them (2 per multiply-add of matmuls,
    convolutions and attention, the oneDNN fused linears and CPU flash attention included; elementwise work is not
    counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_CPU_FLOP_FORMULAS) as counter:
        fn()
    return counter.get_total_flops()


_PEAK_RSS_SCRIPT = """
import importlib, json, sys
def rss_kb(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])
module, name, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
step = getattr(importlib.import_module(module), name)(**args)  # builds the model and inputs, returns one step
step()  # warm-up: allocator pools, lazily built caches
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # reset the peak (VmHWM) to the current resident set
before = rss_kb('VmRSS:')
step()
print(json.dumps({'peak_above_resident_kb': rss_kb('VmHWM:') - before}))
"""


def peak_rss_above_resident(module: str, factory: str, kwargs: dict, threads: int | None = None) -> int:
    """Peak resident memory (bytes) one call of a step needs above what is resident before it, measured in a
    separate process (on the CPU no allocator tracks peaks, and processes do not share pools): the process
    builds the step with ``module.factory(**kwargs)``, runs it once to warm up, resets the kernel's peak-RSS
    counter (``/proc/self/clear_refs``), runs it again and reports ``VmHWM - VmRSS`` (Linux)."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS=str(threads or torch.get_num_threads()))
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS_SCRIPT, module, factory, json.dumps(kwargs)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"peak-RSS process for {module}.{factory} failed:\n{result.stderr[-2000:]}")
    return 1024 * json.loads(result.stdout.strip().splitlines()[-1])["peak_above_resident_kb"]


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
    import timm

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


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


DOC_HEADER = (
    "# densekit benchmarks\n\n"
    "Written by `tools/benchmark.py --write`; each section between `<!-- bench:NAME -->` markers is\n"
    "replaced by its suite and leaves the others alone. Every section records the exact command,\n"
    "the machine and the load average, so numbers can be reproduced and compared.\n"
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
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda asked for, but torch.cuda.is_available() is False")
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


_SUITES: dict[str, Callable[[BenchConfig], SuiteResult]] = {}


def register_suite(fn: Callable[[BenchConfig], SuiteResult]) -> Callable[[BenchConfig], SuiteResult]:
    """Register a suite under its function name, e.g. ``swin_t_backbone``."""
    _SUITES[fn.__name__] = fn
    return fn


def list_suites() -> list[str]:
    return sorted(_SUITES)


def run_suite(name: str, config: BenchConfig) -> SuiteResult:
    """Run the suite ``name``; raises KeyError naming the known suites."""
    if name not in _SUITES:
        raise KeyError(f"unknown suite {name!r}; known: {', '.join(list_suites())}")
    return _SUITES[name](config)


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


# --------------------------------------------------------------------------- suite: Swin-T backbone

_TIMM_SWIN_T = "swin_tiny_patch4_window7_224"
_SWIN_WINDOW, _SWIN_PATCH, _SWIN_STAGES = 7, 4, 4
AGREEMENT_TOL = 1e-4


def timm_swin_to_densekit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Swin state dict -> densekit ``SwinTransformer(out_norm=False)`` layout.

    ``layers.i`` -> ``stages.i``; timm's ``layers.i.downsample`` (start of stage i) ->
    ``stages.{i-1}.downsample`` (end of the previous stage); ``head.*`` and ``norm.*`` dropped.
    Both use the [x0, x1, x2, x3] merging order, so no channel permutation is needed.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "norm.")):
            continue
        match = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        if match:
            out[f"stages.{int(match[1]) - 1}.downsample.{match[2]}"] = value
        elif key.startswith("layers."):
            out["stages." + key[len("layers."):]] = value
        else:
            out[key] = value
    return out


def swin_agreement_size(side: int) -> int:
    """A side at which timm's Swin and official Swin compute the same thing, near ``side``.

    timm rolls (shifts) a block's input *before* padding it to window multiples; official Swin,
    mmsegmentation, HuggingFace and densekit pad first, then roll. Where a stage's side is neither
    a window multiple nor at most one window, the two place the padding differently and their
    outputs differ by design. Returns ``side`` if every stage is safe, else the nearest multiple
    of ``patch * window * 2**3`` (224 for Swin-T), at least one.
    """
    sides = [-(-side // (_SWIN_PATCH * 2**i)) for i in range(_SWIN_STAGES)]
    if all(s % _SWIN_WINDOW == 0 or s <= _SWIN_WINDOW for s in sides):
        return side
    unit = _SWIN_PATCH * _SWIN_WINDOW * 2 ** (_SWIN_STAGES - 1)
    return max(unit, round(side / unit) * unit)


def _timm_swin_t(img_size: tuple[int, int] = (224, 224)) -> nn.Module:
    import timm

    return timm.create_model(_TIMM_SWIN_T, pretrained=False, num_classes=0, img_size=img_size)


# timm built at its default 224 with ``strict_img_size=False``, timed at other sizes: see build_swin_t_models.
TIMM_DYNAMIC = "timm (strict_img_size=False)"


def _load_timm_swin(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Load window-7 timm weights into a timm Swin built for a size where some stage is smaller
    than the window (timm then shrinks that stage's window and table): crop the tables to their
    central offsets, as densekit does at run time, so both models use the same biases."""
    from densekit.layers.rel_pos_bias import crop_bias_table, table_window

    own = model.state_dict()
    weights = {k: crop_bias_table(v, table_window(own[k])) if k.endswith("relative_position_bias_table")
               and v.shape != own[k].shape else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True)
    return model


def _with_fused_attn(model: nn.Module) -> nn.Module:
    """A copy of a timm Swin with SDPA window attention (timm's ``fused_attn``, experimental there)."""
    from timm.models.swin_transformer import WindowAttention as TimmWindowAttention

    fused = copy.deepcopy(model)
    for module in fused.modules():
        if isinstance(module, TimmWindowAttention):
            module.fused_attn = True
    return fused


def build_swin_t_models(sizes: Sequence[tuple[int, int]], device: str, seed: int = 0,
                        dynamic_size: tuple[int, int] | None = None
                        ) -> tuple[dict[str, nn.Module], dict[tuple[int, int], dict[str, nn.Module]]]:
    """densekit Swin-T (SDPA and reference attention) and timm Swin-T with identical random weights.

    The weights are those of a timm Swin-T at 224 (window 7 in every stage) seeded with ``seed``.
    densekit takes any size, so its two models serve every size. timm is built per size with
    ``img_size=size``: at a fixed size it precomputes its shift masks and picks window and shift
    per stage for that size, as densekit does (and caches). Built at 224 with ``strict_img_size=False``
    instead (``TIMM_DYNAMIC``, added for ``dynamic_size`` when that is not 224), it rebuilds the masks
    every forward and keeps the windows and shifts of the 224 build, dropping the shift of stage 3 at
    512x512 - a different model, timed but not held to agree.

    Returns:
        densekit models ``{name: model}`` and, per size, timm models ``{name: model}``.
    """
    import densekit

    torch.manual_seed(seed)
    source = _timm_swin_t()
    weights = source.state_dict()
    ours = {}
    for name, impl in (("densekit", "sdpa"), ("densekit (reference attn)", "reference")):
        model = densekit.create_backbone("swin_t", out_norm=False, attn_impl=impl)
        model.load_state_dict(timm_swin_to_densekit(weights), strict=True)
        # densekit's CPU fast paths as init_model installs them; the reference row stays the plain network.
        ours[name] = accel.optimize(model.eval().to(device), enabled=impl == "sdpa")
    peers = {}
    for size in dict.fromkeys(tuple(s) for s in sizes):
        timm_model = source if size == (224, 224) else _load_timm_swin(_timm_swin_t(size), weights)
        timm_model = timm_model.eval().to(device)
        peers[size] = {"timm": timm_model, "timm (fused_attn=True)": _with_fused_attn(timm_model)}
    if dynamic_size is not None and tuple(dynamic_size) != (224, 224):
        import timm

        dynamic = timm.create_model(_TIMM_SWIN_T, pretrained=False, num_classes=0, strict_img_size=False)
        dynamic.load_state_dict(weights, strict=True)
        peers[tuple(dynamic_size)][TIMM_DYNAMIC] = dynamic.eval().to(device)
    return ours, peers


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


@register_suite
def swin_t_backbone(config: BenchConfig) -> SuiteResult:
    """Swin-T backbone forward, densekit against timm ``forward_intermediates`` on identical weights."""
    h, w = config.size
    dev = config.device
    # Agreement is checked in fp32 at a size where timm and densekit share semantics (see
    # swin_agreement_size), then timing runs at the asked size with the same weights.
    check = (swin_agreement_size(h), swin_agreement_size(w))
    ours, peers = build_swin_t_models([check, (h, w)], dev, config.seed, dynamic_size=(h, w))
    dynamic = peers[(h, w)].pop(TIMM_DYNAMIC, None)  # not held to agree: see build_swin_t_models
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.batch, 3, h, w, generator=gen).to(dev)
    xc = x if check == (h, w) else torch.randn(config.batch, 3, *check, generator=gen).to(dev)

    check_diffs = diffs_against_timm({**ours, **peers[check]}, xc, "fp32", dev)
    check_agreement(check_diffs, f"Swin-T maps against timm's at {check[0]}x{check[1]}")
    if check != (h, w):
        del peers[check]
    cases, steps = backbone_cases({**ours, **peers[(h, w)], **({TIMM_DYNAMIC: dynamic} if dynamic else {})}, x,
                                  config)
    run_diffs = case_diffs_against_timm(cases)  # in compile mode, the first calls compile (before the timed rounds)
    stats = compare(cases, config.warmup, config.runs, dev)

    size_txt = f"{h}x{w}"
    statuses = compile_statuses(steps) if config.mode == "compile" else {}
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    diff_headers = [f"max abs diff vs timm, fp32 @ {check[0]}x{check[1]} (checked <= {AGREEMENT_TOL:g})",
                    f"max abs diff vs timm, {config.mode} @ {size_txt}", *mode_headers]
    diffs = {n: [f"{check_diffs[n]:.1e}" if n in check_diffs else "not checked", f"{run_diffs[n]:.1e}",
                 *mode_cells.get(n, [])] for n in stats}
    table = results_table(stats, "timm", diffs, diff_headers)
    dk, peer = stats["densekit"], stats["timm"]
    title = f"Swin-T backbone forward, {size_txt}, batch {config.batch}, {config.mode}, {dev}"
    autocast = f", `torch.autocast('{dev}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    semantics = (
        f"Why two diff columns: at {size_txt} not every stage side is a multiple of the window (7), and timm "
        "rolls (shifts) a block's input before padding it to window multiples while densekit, like official "
        "Swin, mmsegmentation and HuggingFace, pads first and then rolls; the padding lands in different "
        f"places, so the outputs at {size_txt} differ by design, not by error. Both attend over the "
        "same padded grids, windows and shifts (densekit projects only the real tokens, see "
        "`densekit/layers/window_attention.py`). Agreement is therefore checked, with the same weights, at "
        f"{check[0]}x{check[1]}, the nearest size where every stage side is a window multiple."
        if check != (h, w) else "Agreement is checked at the timing size itself."
    )
    note = mode_note(config.mode, statuses)
    semantics += f"\n\n{note}" if note else ""
    dynamic_text = dynamic_ratio = ""
    if TIMM_DYNAMIC in stats:
        dynamic_text = (f"\n`{TIMM_DYNAMIC}` is timm built once at its default 224 with `strict_img_size=False` "
                        "(how one timm Swin runs at any input size): it rebuilds its shift masks on every forward "
                        "and keeps the 224 build's per-stage windows and shifts (its last stage, 7x7 at 224, never "
                        "shifts), so at other sizes it is a different model, whose outputs differ by design and are "
                        "not checked.")
        dynamic_ratio = (f"; against `{TIMM_DYNAMIC}`: **{dk.median / stats[TIMM_DYNAMIC].median:.2f}x** "
                         f"({_ms(stats[TIMM_DYNAMIC].median)} ms)")
    markdown = f"""
What: `densekit.create_backbone('swin_t', out_norm=False)` (the four stage maps, NCHW) against
`timm.create_model('{_TIMM_SWIN_T}', pretrained=False, num_classes=0, img_size=({h}, {w}))`
`.forward_intermediates(x, intermediates_only=True)`, on identical random weights (timm's, copied
into densekit: `layers.i` -> `stages.i`, `layers.i.downsample` -> `stages.{{i-1}}.downsample`,
`head`/`norm` dropped). timm is built for the input size (`img_size`), so its shift masks are
precomputed buffers and its per-stage windows and shifts are the ones densekit uses (with
`strict_img_size=False` it would rebuild masks every call and drop stage 3's shift at 512);
densekit caches its folded bias+mask per size. `timm` is timm's default path: its Swin attention
is matmul-softmax-matmul, because timm calls Swin's fused attention experimental (on only with
`TIMM_FUSED_ATTN=2`); `timm (fused_attn=True)` is the same model with SDPA switched on.
`densekit (reference attn)` is `attn_impl='reference'` (per-window matmuls, official Swin).{dynamic_text}

Protocol: one process, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs every implementation once; the order is
reversed every other round); median and min over the rounds; ratio = median / timm's median
(below 1 = faster than timm).

{table}

densekit / timm (median): **{dk.median / peer.median:.2f}x** ({_ms(dk.median)} ms vs {_ms(peer.median)} ms)\
{dynamic_ratio}.

{semantics}
"""
    extra = {"check_size": check, "check_diffs": check_diffs, "run_diffs": run_diffs}
    if statuses:
        extra["compile"] = statuses
    return SuiteResult("swin_t_backbone", title, stats, markdown, extra=extra)
