"""densekit.inference.timing, the one copy of the timing and peak-memory utilities that ``densekit benchmark`` and
the peer suites in benchmarks/ measure with."""
from __future__ import annotations

import mmap

import pytest
import torch

from densekit.inference import timing


def test_time_fn_and_compare_interleave():
    calls = []
    assert len(timing.time_fn(lambda: calls.append("x"), warmup=2, runs=3)) == 3
    assert len(calls) == 5

    order = []
    stats = timing.compare({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, runs=3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert set(stats) == {"a", "b"}
    for s in stats.values():
        assert len(s.times) == 3 and s.min <= s.median and s.peak_mem is None


def test_stats_median_and_min():
    s = timing.Stats([0.3, 0.1, 0.2])
    assert s.median == 0.2 and s.min == 0.1 and s.peak_mem is None


def _allocate(mib: int) -> None:
    """Hold ``mib`` MiB of written (so resident) memory for the length of the call. A fresh anonymous mapping, so
    no allocator can serve it from memory an earlier test left resident (as torch's or glibc's free lists may)."""
    with mmap.mmap(-1, mib * 2**20) as block:
        for offset in range(0, len(block), mmap.PAGESIZE):
            block[offset] = 1
        assert block[len(block) - mmap.PAGESIZE] == 1


def test_cpu_peak_memory_sees_an_allocation_freed_before_it_returns():
    """64 MiB held inside the call and freed before it returns: the peak above resident counts them (the kernel's
    peak counter, reset first), or where no reset is possible reports the lower bound and says so."""
    peak = timing.call_peak_memory(lambda: _allocate(64), "cpu")
    if peak.method == timing.RSS_PEAK:
        assert 60 * 2**20 <= peak.bytes < 400 * 2**20
    else:
        assert peak.method == timing.MAXRSS_GROWTH and peak.bytes >= 0


def test_cpu_peak_memory_falls_back_to_maxrss_growth(monkeypatch):
    """Without /proc/self/clear_refs the growth of ru_maxrss is reported, named as the lower bound it is."""
    monkeypatch.setattr(timing, "_reset_peak_rss", lambda: False)
    peak = timing.cpu_peak_memory(lambda: _allocate(8))
    assert peak.method == timing.MAXRSS_GROWTH and "lower bound" in peak.method and peak.bytes >= 0


def test_peak_memory_is_none_off_cuda():
    assert timing.peak_memory(lambda: None, "cpu") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_counts_the_call_above_resident():
    held = torch.ones(2**20, device="cuda")  # resident: not counted
    peak = timing.call_peak_memory(lambda: torch.ones(16 * 2**20 // 4, device="cuda").sum(), "cuda")
    assert peak.method == timing.CUDA_PEAK and 16 * 2**20 <= peak.bytes < 64 * 2**20
    del held
