"""Timing and peak memory of a callable: what ``densekit benchmark`` and the peer suites in ``benchmarks/`` measure
with (one copy, here).

Read top to bottom: a timed call (CUDA events on a GPU, ``perf_counter`` on the CPU), ``time_fn`` (warm-up, then
timed runs), ``Stats`` (median and min), ``compare`` (several cases interleaved), then peak memory: the CUDA
allocator's peak, and on the CPU the peak resident set above what was resident before the call.
"""
from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------- timing


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed_call(fn: Callable[[], Any], device: str = "cpu") -> float:
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
    synchronize(device)
    return [timed_call(fn, device) for _ in range(runs)]


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
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(runs):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].append(timed_call(cases[name], device))
    return {name: Stats(times[name], peak_memory(cases[name], device)) for name in names}


# --------------------------------------------------------------------------- peak memory


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


CUDA_PEAK = "CUDA allocator peak above the memory allocated before the calls (torch.cuda.max_memory_allocated)"
RSS_PEAK = ("this process's peak resident set during the calls above its resident set before them (Linux: the "
            "kernel's peak, VmHWM, reset through /proc/self/clear_refs first)")
MAXRSS_GROWTH = ("growth of this process's peak resident set (getrusage ru_maxrss) over the calls: a lower bound, "
                 "0 where the process peaked higher before them (no /proc/self/clear_refs here)")


@dataclass(frozen=True)
class PeakMemory:
    """Bytes the measured calls needed at their peak above what was resident before them, and how that was
    measured (``CUDA_PEAK``, ``RSS_PEAK`` or ``MAXRSS_GROWTH``)."""

    bytes: int
    method: str


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``'VmRSS:'``, ``'VmHWM:'``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current resident set; False where that is impossible
    (not Linux, or /proc/self/clear_refs not writable in this container)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


def _maxrss_bytes() -> int:
    """The process's peak resident set so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else 1024 * peak


def cpu_peak_memory(fn: Callable[[], Any]) -> PeakMemory:
    """Peak resident memory of this process while ``fn`` runs, above the resident set before it.

    On Linux the kernel's peak counter is reset first (``RSS_PEAK``), so the figure is this call's own peak,
    whatever the process needed before. Memory the allocator kept from earlier calls and reuses is resident
    already and not counted again: to see what inference needs on top of the model, start measuring before its
    first call, in a process that holds nothing else (``densekit benchmark`` measures over its warm-up and timed
    calls; the peer suites run a process per model). Elsewhere the growth of ``ru_maxrss`` (``MAXRSS_GROWTH``) is
    a lower bound.
    """
    if _reset_peak_rss():
        before = _status_kib("VmRSS:")
        fn()
        return PeakMemory(1024 * max(0, _status_kib("VmHWM:") - before), RSS_PEAK)
    before = _maxrss_bytes()
    fn()
    return PeakMemory(max(0, _maxrss_bytes() - before), MAXRSS_GROWTH)


def call_peak_memory(fn: Callable[[], Any], device: str = "cpu") -> PeakMemory:
    """Peak memory while ``fn`` runs, above what was resident before it: the CUDA allocator's on ``cuda``
    (``peak_memory``), the process's resident set on the CPU (``cpu_peak_memory``)."""
    if device == "cuda":
        return PeakMemory(peak_memory(fn, device), CUDA_PEAK)
    return cpu_peak_memory(fn)
