"""Smoke tests of the benchmark machinery (densekit.benchmark, tools/benchmark.py): fast, tiny inputs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from densekit import benchmark

ROOT = Path(__file__).resolve().parent.parent


def test_time_fn_and_compare_interleave():
    calls = []
    assert len(benchmark.time_fn(lambda: calls.append("x"), warmup=2, runs=3)) == 3
    assert len(calls) == 5

    order = []
    stats = benchmark.compare({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, runs=3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert set(stats) == {"a", "b"}
    for s in stats.values():
        assert len(s.times) == 3 and s.min <= s.median and s.peak_mem is None


def test_markdown_table():
    text = benchmark.markdown_table(["x", "y"], [[1, "a"], [2, "b"]])
    assert text.splitlines() == ["| x | y |", "| --- | --- |", "| 1 | a |", "| 2 | b |"]


def test_update_section_keeps_other_sections(tmp_path):
    doc = tmp_path / "benchmarks.md"
    benchmark.update_section(doc, "one", "first v1")
    assert doc.read_text().startswith("# densekit benchmarks")
    benchmark.update_section(doc, "two", "second v1")
    text = doc.read_text()
    doc.write_text(text.replace("# densekit benchmarks", "# densekit benchmarks\n\nhand-written note"))
    benchmark.update_section(doc, "one", "first v2\nwith two lines")
    text = doc.read_text()
    assert "first v1" not in text and "first v2\nwith two lines" in text
    assert "<!-- bench:two -->\nsecond v1\n<!-- /bench:two -->" in text
    assert "hand-written note" in text
    assert text.index("bench:one") < text.index("bench:two")  # replaced in place, not appended
    assert text.count("<!-- bench:one -->") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temp file left behind


def test_swin_agreement_size():
    assert benchmark.swin_agreement_size(448) == 448
    assert benchmark.swin_agreement_size(512) == 448
    assert benchmark.swin_agreement_size(64) == 224
    assert benchmark.swin_agreement_size(56) == 56


def test_swin_t_backbone_suite(tmp_path, capsys):
    """The whole CLI path on a tiny input: build, agreement check, interleaved timing, docs section."""
    spec = importlib.util.spec_from_file_location("benchmark_tool", ROOT / "tools" / "benchmark.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    threads = torch.get_num_threads()
    doc = tmp_path / "benchmarks.md"
    try:
        result = tool.main(["--size", "64", "64", "--runs", "1", "--warmup", "0", "--threads", "1", "--write",
                            "--docs", str(doc)])
    finally:
        torch.set_num_threads(threads)

    names = ["densekit", "densekit (reference attn)", "timm", "timm (fused_attn=True)"]
    assert list(result.stats) == names
    for s in result.stats.values():
        assert len(s.times) == 1 and s.median > 0 and s.peak_mem is None
    assert result.extra["check_size"] == (224, 224)  # 64 is not window-safe for timm; see swin_agreement_size
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL

    text = doc.read_text()
    assert "<!-- bench:swin_t_backbone.cpu.fp32 -->" in text and "<!-- /bench:swin_t_backbone.cpu.fp32 -->" in text
    assert "python tools/benchmark.py --size 64 64 --runs 1 --warmup 0" in text
    assert "| implementation | median ms | min ms | ratio vs timm |" in text
    for name in names:
        assert f"| {name} |" in text
    assert "| torch threads (get_num_threads) | 1 |" in text
    assert "updated section" in capsys.readouterr().out


def test_bad_config():
    with pytest.raises(ValueError):
        benchmark.BenchConfig(mode="fp8")
    with pytest.raises(KeyError, match="swin_t_backbone"):
        benchmark.run_suite("nope", benchmark.BenchConfig())


def test_upernet_suite_smoke():
    """The UPerNet suite checks agreement with HF and times inference and a training step (256x256: every
    stage is larger than the window, where HF's SwinBackbone and official Swin agree)."""
    pytest.importorskip("transformers")
    from densekit import bench_upernet  # noqa: F401  (registers the suite)

    result = benchmark.run_suite("upernet_swin_t", benchmark.BenchConfig(size=(256, 256), runs=1, warmup=0,
                                                                         peak_rss=False))
    assert result.extra["max_abs_diff"] < 1e-4
    assert set(result.stats) == {"infer densekit", "infer HF transformers", "infer densekit bf16 autocast",
                                 "train densekit", "train HF transformers"}
    assert result.extra["same_labels_bf16"] > 0.9 and 0 < result.extra["gflops"] < 1000
    assert "Training step" in result.markdown and all(s.median > 0 for s in result.stats.values())


def test_peak_rss_of_a_step_in_its_own_process():
    """A step that holds a 64 MiB tensor at its peak reports at least that much above the resident set."""
    peak = benchmark.peak_rss_above_resident("tests.test_benchmark", "_allocating_step", {"mib": 64}, threads=1)
    assert 60 * 2**20 <= peak < 400 * 2**20


def _allocating_step(mib: int):
    def step() -> None:
        buffer = torch.ones(mib * 2**18)  # float32: 4 bytes each, touched so it is resident
        assert float(buffer[-1]) == 1.0

    return step


def test_gemm_rate_and_model_flops():
    assert benchmark.gemm_rate(size=256, runs=2) > 1e8  # FLOP/s
    linear = torch.nn.Linear(64, 32)
    assert benchmark.model_flops(lambda: linear(torch.randn(8, 64))) == 2 * 8 * 64 * 32
