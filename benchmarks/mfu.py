"""Model FLOPs utilisation (MFU) of benchmark cases on a GPU: the cards' dense bf16 peaks, the arithmetic, the
measurement of the card's own bf16 matmul rate, and the markdown a suite adds on CUDA.

MFU = model FLOPs per second achieved / the card's dense (non-sparse) bf16 tensor-core peak. Model FLOPs are
the model's, not an implementation's: every implementation of one model is credited the same FLOPs per image, so
a faster implementation gets a higher MFU. A training step is credited ``TRAIN_FLOPS_FACTOR`` x the forward's
FLOPs (forward + backward ~ 1x + 2x the forward, the usual estimate). Read top to bottom: peaks, arithmetic,
measurement, markdown.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from .harness import Stats, gemm_rate, markdown_table

TRAIN_FLOPS_FACTOR = 3  # forward + backward ~ 2x forward: the usual estimate of a training step's FLOPs
MATMUL_SIZE = 8192  # large enough for a GPU's bf16 matmul to reach its sustained rate
UNKNOWN_PEAK = "unknown peak (pass --peak-tflops)"

# --------------------------------------------------------------------------- peaks

# Dense (non-sparse) bf16 tensor-core peaks in TFLOPS, NVIDIA datasheet (half the "with sparsity" figures the
# datasheets print first); RTX 4090: bf16 with fp32 accumulate, as NVIDIA lists it. Rows: (words to find in
# ``torch.cuda.get_device_name()``, the card, TFLOPS). Matched as whole words, case-insensitive, first match wins:
# so "A10" matches neither an A100 nor an A10G, and the H100 NVL and PCIe come before the SXM, whose name is only
# "NVIDIA H100 80GB HBM3".
BF16_PEAK_TFLOPS: tuple[tuple[str, str, float], ...] = (
    ("H100 NVL", "H100 NVL", 835.0),
    ("H100 PCIe", "H100 PCIe", 756.0),
    ("H100", "H100 SXM", 989.4),
    ("H200 NVL", "H200 NVL", 835.0),
    ("H200", "H200 SXM", 989.4),
    ("A100", "A100", 312.0),
    ("L40S", "L40S", 362.0),
    ("A10", "A10", 125.0),
    ("RTX 4090", "RTX 4090", 165.2),
)


@dataclass(frozen=True)
class Peak:
    """A card's dense bf16 peak in FLOP/s (None where unknown) and where the number comes from."""

    flops: float | None
    source: str  # e.g. 'NVIDIA datasheet, H100 SXM', '--peak-tflops', 'not in densekit's table'


def datasheet_bf16_tflops(device_name: str) -> tuple[str, float] | None:
    """``(card, TFLOPS)`` of the first ``BF16_PEAK_TFLOPS`` row whose words ``device_name`` holds, else None."""
    for words, card, tflops in BF16_PEAK_TFLOPS:
        if re.search(rf"\b{re.escape(words)}\b", device_name, re.IGNORECASE):
            return card, tflops
    return None


def bf16_peak(device_name: str, peak_tflops: float | None = None) -> Peak:
    """The card's dense bf16 peak: ``peak_tflops`` (the CLI's ``--peak-tflops``) where given, else the datasheet
    table's, else an unknown peak (``flops=None``), which the markdown reports instead of failing."""
    if peak_tflops is not None:
        return Peak(peak_tflops * 1e12, "--peak-tflops")
    found = datasheet_bf16_tflops(device_name)
    if found is None:
        return Peak(None, "not in densekit's table")
    return Peak(found[1] * 1e12, f"NVIDIA datasheet, {found[0]}")


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Throughput:
    """One timed case: ``images`` per call in ``seconds`` (its median), credited ``flops_per_image`` model FLOPs;
    ``peak_mem``: CUDA allocator peak of one call above resident, bytes (``benchmark.peak_memory``), or None."""

    case: str
    images: int
    seconds: float
    flops_per_image: float
    peak_mem: int | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def flops_per_s(self) -> float:
        return self.flops_per_image * self.images_per_s


def mfu(achieved_flops_per_s: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved over peak FLOP/s; None where the peak is unknown."""
    return None if peak_flops is None else achieved_flops_per_s / peak_flops


def throughputs(infer: dict[str, Stats], train: dict[str, Stats], batch: int, train_batch: int,
                forward_flops_per_image: float) -> list[Throughput]:
    """The inference cases (``batch`` images a call, one forward's FLOPs an image) and training cases
    (``train_batch`` images a step, ``TRAIN_FLOPS_FACTOR`` x the forward's FLOPs an image) as ``Throughput``s."""
    train_flops = TRAIN_FLOPS_FACTOR * forward_flops_per_image
    return ([Throughput(f"inference: {n}", batch, s.median, forward_flops_per_image, s.peak_mem)
             for n, s in infer.items()]
            + [Throughput(f"training step: {n}", train_batch, s.median, train_flops, s.peak_mem)
               for n, s in train.items()])


def images_per_s_text(images_per_s: float) -> str:
    """Images/s for a table cell: three significant digits, whole numbers from 1000 on."""
    return f"{images_per_s:.3g}" if images_per_s < 1000 else f"{images_per_s:.0f}"


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class GpuRates:
    """The card a suite ran on: its name, dense bf16 peak and bf16 matmul rate measured in the run (FLOP/s)."""

    name: str
    peak: Peak
    matmul_flops: float


def measure_gpu(peak_tflops: float | None = None) -> GpuRates:
    """Name, peak (``bf16_peak``) and measured bf16 matmul rate (``MATMUL_SIZE`` square ``a @ b``, median of 5) of
    the current CUDA device."""
    name = torch.cuda.get_device_name()
    rate = gemm_rate(size=MATMUL_SIZE, device="cuda", dtype=torch.bfloat16)
    return GpuRates(name, bf16_peak(name, peak_tflops), rate)


def utilisation_extra(cases: list[Throughput], gpu: GpuRates) -> dict[str, Any]:
    """The numbers behind ``utilisation_markdown``, for ``SuiteResult.extra``: the card, its peak (TFLOPS, None
    where unknown) and the peak's source, the measured matmul rate (TFLOPS), images/s and MFU by case."""
    return {"name": gpu.name, "peak_tflops": None if gpu.peak.flops is None else gpu.peak.flops / 1e12,
            "peak_source": gpu.peak.source, "matmul_tflops": gpu.matmul_flops / 1e12,
            "images_per_s": {c.case: c.images_per_s for c in cases},
            "mfu": {c.case: mfu(c.flops_per_s, gpu.peak.flops) for c in cases},
            "mfu_vs_matmul": {c.case: mfu(c.flops_per_s, gpu.matmul_flops) for c in cases}}


# --------------------------------------------------------------------------- markdown


def _share(achieved: float, of: float | None) -> str:
    share = mfu(achieved, of)
    return UNKNOWN_PEAK if share is None else f"{share:.1%}"


def utilisation_table(cases: list[Throughput], gpu: GpuRates) -> str:
    """One row per case: images/s, model TFLOP/s, MFU against the peak and against the measured matmul rate,
    CUDA allocator peak above resident."""
    headers = ["case", "images/s", "model GFLOP / image", "model TFLOP/s", "MFU vs dense bf16 peak",
               "MFU vs measured bf16 matmul", "peak CUDA memory above resident, MiB"]
    rows = [[c.case, images_per_s_text(c.images_per_s), f"{c.flops_per_image / 1e9:.1f}",
             f"{c.flops_per_s / 1e12:.1f}", _share(c.flops_per_s, gpu.peak.flops),
             _share(c.flops_per_s, gpu.matmul_flops), "-" if c.peak_mem is None else f"{c.peak_mem / 2**20:.0f}"]
            for c in cases]
    return markdown_table(headers, rows)


def utilisation_markdown(cases: list[Throughput], gpu: GpuRates, mode: str, counted: str) -> str:
    """The GPU paragraph and table: how FLOPs and MFU are counted, the peak and its source, the measured matmul
    rate. ``counted``: what the forward's FLOPs are, in the suite's words."""
    peak = (f"{gpu.peak.flops / 1e12:.1f} TFLOPS ({gpu.peak.source})" if gpu.peak.flops is not None else
            f"unknown: {gpu.name!r} is not in densekit's table of NVIDIA datasheet peaks, so the MFU cells say "
            "so; pass `--peak-tflops` to give it")
    not_bf16 = (f" This run's mode is `{mode}`, not `bf16`: the shares are still against bf16 rates."
                if mode != "bf16" else "")
    return f"""GPU utilisation ({gpu.name}). Model FLOPs per image: {counted}; every implementation is
credited the same (same model), and a training step {TRAIN_FLOPS_FACTOR}x the forward's (forward + backward ~ 2x
forward, the usual estimate). MFU = model FLOP/s achieved (FLOPs per image x images/s at the median time) over
the card's dense bf16 tensor-core peak, {peak}; the column after it divides by this card's bf16 matmul rate
measured in the same run instead, {gpu.matmul_flops / 1e12:.1f} TFLOPS ({MATMUL_SIZE}x{MATMUL_SIZE} `a @ b`, median
of 5). Peak CUDA memory: `torch.cuda.max_memory_allocated()` over one extra call after the timed rounds, minus
what was allocated before it (weights, inputs, optimizer state).{not_bf16}

{utilisation_table(cases, gpu)}
"""
