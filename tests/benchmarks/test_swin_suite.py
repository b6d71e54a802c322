"""The ``swin_t_backbone`` benchmark suite (benchmarks.swin): densekit's Swin-T against timm's at a tiny size,
through ``python -m benchmarks`` (benchmarks.run), in every mode, with its accel-off row."""
from __future__ import annotations

import pytest
import torch
from mode_stubs import failing_compile, record_prepare_model

from benchmarks import harness as benchmark
from benchmarks import run
from benchmarks import swin as bench_swin
from benchmarks.run import run_suite
from densekit import accel
from densekit.backbones.swin import SwinBlock
from densekit.engine.compile import CompileFallbackWarning


def test_swin_agreement_size():
    assert bench_swin.swin_agreement_size(448) == 448
    assert bench_swin.swin_agreement_size(512) == 448
    assert bench_swin.swin_agreement_size(64) == 224
    assert bench_swin.swin_agreement_size(56) == 56


def test_swin_t_backbone_suite(tmp_path, capsys):
    """The whole CLI path on a tiny input: build, agreement check, interleaved timing, docs section."""
    threads = torch.get_num_threads()
    doc = tmp_path / "benchmarks.md"
    try:
        result = run.main(["--size", "64", "64", "--runs", "1", "--warmup", "0", "--threads", "1", "--write",
                           "--docs", str(doc)])
    finally:
        torch.set_num_threads(threads)

    names = ["densekit", "densekit (accel off)", "densekit (reference attn)", "timm", "timm (fused_attn=True)",
             bench_swin.TIMM_DYNAMIC]
    assert list(result.stats) == names
    for s in result.stats.values():
        assert len(s.times) == 1 and s.median > 0 and s.peak_mem is None
    assert result.extra["check_size"] == (224, 224)  # 64 is not window-safe for timm; see swin_agreement_size
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL
    assert bench_swin.TIMM_DYNAMIC not in result.extra["check_diffs"]  # a different model at 64: timed only

    text = doc.read_text()
    assert "<!-- bench:swin_t_backbone.cpu.fp32 -->" in text and "<!-- /bench:swin_t_backbone.cpu.fp32 -->" in text
    assert "python -m benchmarks --size 64 64 --runs 1 --warmup 0" in text
    assert "| implementation | median ms | min ms | ratio vs timm |" in text
    for name in names:
        assert f"| {name} |" in text
    assert "| torch threads (get_num_threads) | 1 |" in text
    assert f"| {bench_swin.TIMM_DYNAMIC} |" in text and "| not checked |" in text
    assert f"; against `{bench_swin.TIMM_DYNAMIC}`: **" in text
    assert "; `densekit.accel` on / off: **" in text and "`densekit (accel off)` is the same model" in text
    assert "updated section" in capsys.readouterr().out


def test_timm_swin_built_with_strict_img_size_false_holds_the_same_weights():
    """The suite's ``timm (strict_img_size=False)`` is timm's 224 build run at other sizes: the same weights as the
    ``timm`` rows, so at 224 it gives their outputs; at 512 it is added only for the timed size."""
    _, peers = bench_swin.build_swin_t_models([(224, 224), (512, 512)], "cpu", dynamic_size=(512, 512))
    dynamic = peers[(512, 512)][bench_swin.TIMM_DYNAMIC]
    assert bench_swin.TIMM_DYNAMIC not in peers[(224, 224)]
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        same = benchmark.max_abs_diff(dynamic.forward_intermediates(x, intermediates_only=True),
                                      peers[(224, 224)]["timm"].forward_intermediates(x, intermediates_only=True))
    assert same == 0
    _, at_224 = bench_swin.build_swin_t_models([(224, 224)], "cpu", dynamic_size=(224, 224))
    assert bench_swin.TIMM_DYNAMIC not in at_224[(224, 224)]  # at 224 it would be the `timm` row itself


def test_swin_t_backbone_suite_channels_last(tmp_path, monkeypatch):
    """channels_last reaches every model and the input through the CLI, and gets its own docs section."""
    prepared = record_prepare_model(monkeypatch, benchmark)
    threads = torch.get_num_threads()
    doc = tmp_path / "benchmarks.md"
    try:
        result = run.main(["--size", "64", "64", "--runs", "1", "--warmup", "0", "--threads", "1",
                           "--mode", "channels_last", "--write", "--docs", str(doc)])
    finally:
        torch.set_num_threads(threads)
    assert sorted(prepared) == [("densekit", "channels_last")] * 3 + [("timm", "channels_last")] * 3
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL  # the fp32 check, unchanged
    assert result.extra["run_diffs"]["timm (fused_attn=True)"] < 1e-4  # same model and semantics as timm
    assert "compile" not in result.extra
    text = doc.read_text()
    assert "<!-- bench:swin_t_backbone.cpu.channels_last -->" in text and "bench:swin_t_backbone.cpu.fp32" not in text
    assert "Swin-T backbone forward, 64x64, batch 1, channels_last, cpu" in text
    assert "max abs diff vs timm, channels_last @ 64x64" in text and "Mode `channels_last`" in text


def test_swin_t_backbone_suite_compile_reports_fallbacks(monkeypatch):
    """compile mode: densekit's three steps 'compile' (the stand-in returns them as they are), timm's two fail at
    their first call and fall back to eager, one warning each; the table and notes say which is which."""
    monkeypatch.setattr(torch, "compile", failing_compile({4, 5}))
    with pytest.warns(CompileFallbackWarning) as record:
        result = run_suite("swin_t_backbone", benchmark.BenchConfig(size=(64, 64), runs=1, warmup=0, mode="compile"))
    assert sorted(str(w.message).split(" of ")[1].split(" failed (")[0] for w in record) == [
        "timm", "timm (fused_attn=True)"]
    assert result.extra["compile"]["densekit"] == result.extra["compile"]["densekit (accel off)"] == "compiled"
    assert result.extra["compile"]["timm"].startswith("eager (the compiled call raised RuntimeError: C++ compile")
    assert result.extra["run_diffs"]["timm"] == 0  # the fallback returned timm's eager outputs
    assert "| torch.compile |" in result.markdown
    assert "| densekit (reference attn) |" in result.markdown and "| compiled |" in result.markdown
    assert "| eager fallback |" in result.markdown and "Fell back to eager: `timm`: eager (" in result.markdown


def test_accel_off_row_is_the_same_weights_without_the_fast_paths(monkeypatch):
    """``densekit`` gets ``densekit.accel.optimize``, ``densekit (accel off)`` is a copy without it (a stand-in fast
    path is registered for Swin's blocks, so the swap is visible by type); the reference row stays plain. Same
    weights, so the same maps up to the fast paths' float rounding (unfolded patch embedding, fused linears)."""
    fast = type("FastBlock", (SwinBlock,), {})
    monkeypatch.setitem(accel.SWAPS, SwinBlock, fast)
    ours, _ = bench_swin.build_swin_t_models([(224, 224)], "cpu")
    assert list(ours) == ["densekit", "densekit (accel off)", "densekit (reference attn)"]
    assert type(ours["densekit"].stages[0].blocks[0]) is fast and accel.is_optimized(ours["densekit"])
    assert not accel.is_optimized(ours["densekit (accel off)"]) and not accel.is_optimized(ours[bench_swin.REFERENCE])
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert 0 <= benchmark.max_abs_diff(ours["densekit"](x), ours["densekit (accel off)"](x)) < 1e-4


def test_no_accel_off_row_off_the_cpu():
    """On CUDA the fast paths apply nowhere (init_model installs them on the CPU only): one densekit model."""
    model = torch.nn.Linear(2, 2)
    assert benchmark.with_accel_off("densekit", model, "cuda") == {"densekit": model}
    assert list(benchmark.with_accel_off("densekit", model, "cpu")) == ["densekit", "densekit (accel off)"]


def test_table_at_the_agreement_size_in_fp32_has_one_diff_column():
    """At 224x224 in fp32 the run's diff is the checked one: printed once, not as two equal columns."""
    from densekit.inference.timing import Stats

    stats = {"densekit": Stats([0.010, 0.011]), "timm": Stats([0.012, 0.013])}
    diffs = {"densekit": 1.5e-6, "timm": 0.0}
    at_224 = bench_swin._table(benchmark.BenchConfig(size=(224, 224)), (224, 224), stats, diffs, diffs, {})
    header = at_224.splitlines()[0]
    assert header.count("max abs diff vs timm") == 1 and "fp32 @ 224x224 (checked" in header
    at_64 = bench_swin._table(benchmark.BenchConfig(size=(64, 64)), (224, 224), stats, diffs, diffs, {})
    assert at_64.splitlines()[0].count("max abs diff vs timm") == 2  # another size: both columns mean something
