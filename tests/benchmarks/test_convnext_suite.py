"""The ConvNeXt benchmark suites (``convnext_t_backbone``, ``upernet_convnext_t``) at 64x64, one round each:
they run through the CLI, give a ratio row per case, pass their agreement checks, and those checks fail
when the weights differ."""
from __future__ import annotations

import pytest
import torch
from mode_stubs import failing_compile, record_prepare_model

from benchmarks import convnext as bench_convnext
from benchmarks import harness as benchmark
from benchmarks import run
from benchmarks.run import run_suite

SIZE = 64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_tool(argv: list[str]) -> benchmark.SuiteResult:
    """``python -m benchmarks ARGV`` at the tiny size, one round."""
    return run.main(argv + ["--size", str(SIZE), str(SIZE), "--runs", "1", "--warmup", "0", "--threads", "1"])


def _ratio_rows(markdown: str, peer: str) -> dict[str, float]:
    """``{implementation: ratio}`` from every results table in ``markdown`` (the ratio is the 4th column)."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 3 and cells[0] not in ("implementation", "---"):
            rows.setdefault(cells[0], float(cells[3]))
    assert rows[peer] == 1.0
    return rows


def test_convnext_t_backbone_suite(tmp_path):
    doc = tmp_path / "benchmarks.md"
    result = _run_tool(["--suite", "convnext_t_backbone", "--write", "--docs", str(doc)])
    assert result.name == "convnext_t_backbone" and list(result.stats) == ["densekit", "timm"]
    for s in result.stats.values():
        assert len(s.times) == 1 and s.median > 0
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL
    assert set(_ratio_rows(result.markdown, "timm")) == {"densekit", "timm"}
    text = doc.read_text()
    assert "<!-- bench:convnext_t_backbone.cpu.fp32 -->" in text
    assert "python -m benchmarks --suite convnext_t_backbone" in text and "--size 64 64" in text


def test_convnext_t_backbone_suite_channels_last(tmp_path, monkeypatch):
    """channels_last reaches both models (after the fp32 check) and the input, and gets its own docs section."""
    prepared = record_prepare_model(monkeypatch, benchmark)
    doc = tmp_path / "benchmarks.md"
    result = _run_tool(["--suite", "convnext_t_backbone", "--mode", "channels_last", "--write", "--docs", str(doc)])
    assert sorted(prepared) == [("densekit", "channels_last"), ("timm", "channels_last")]
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL  # the fp32 check, unchanged
    assert max(result.extra["run_diffs"].values()) <= benchmark.AGREEMENT_TOL  # the same model in both
    assert "compile" not in result.extra and set(_ratio_rows(result.markdown, "timm")) == {"densekit", "timm"}
    text = doc.read_text()
    assert "<!-- bench:convnext_t_backbone.cpu.channels_last -->" in text
    assert "ConvNeXt-T backbone forward, 64x64, batch 1, channels_last, cpu" in text
    assert "max abs diff vs timm, channels_last |" in text and "Mode `channels_last`" in text


def test_convnext_t_backbone_suite_compile_reports_a_fallback(monkeypatch):
    """compile mode: densekit's step 'compiles' (the stand-in returns it as it is), timm's fails at its first
    call and falls back to eager with one warning; the table and note say which is which."""
    from densekit.engine.compile import CompileFallbackWarning

    monkeypatch.setattr(torch, "compile", failing_compile({2}))
    with pytest.warns(CompileFallbackWarning, match="torch.compile of timm failed") as record:
        result = run_suite("convnext_t_backbone", benchmark.BenchConfig(size=(SIZE, SIZE), runs=1,
                                                                                  warmup=0, mode="compile"))
    assert len(record) == 1
    assert result.extra["compile"]["densekit"] == "compiled"
    assert result.extra["compile"]["timm"].startswith("eager (the compiled call raised RuntimeError: C++ compile")
    assert result.extra["run_diffs"]["timm"] == 0  # the fallback returned timm's eager maps
    assert result.extra["run_diffs"]["densekit"] <= benchmark.AGREEMENT_TOL
    assert "| torch.compile |" in result.markdown and "| compiled |" in result.markdown
    assert "| eager fallback |" in result.markdown and "Fell back to eager: `timm`: eager (" in result.markdown


def test_convnext_t_backbone_refuses_sizes_timm_would_floor():
    with pytest.raises(ValueError, match="multiples of 32"):
        run_suite("convnext_t_backbone", benchmark.BenchConfig(size=(100, 64), runs=1, warmup=0))


def _perturb_one_block(timm_convnext: torch.nn.Module) -> None:
    """Add noise of std 1e-3 to one block's last linear (stage 3, block 5) of a timm ConvNeXt-T."""
    with torch.no_grad():
        weight = timm_convnext.stages[2].blocks[4].mlp.fc2.weight
        weight.add_(1e-3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))


def test_backbone_agreement_check_catches_one_wrong_block(monkeypatch):
    """One densekit block off by 1e-3 fails the check; with timm's 1e-6 layer scales it would pass unseen,
    which is why the suite spreads them."""
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    def perturbed_diffs() -> dict[str, float]:
        models = bench_convnext.build_convnext_t_models("cpu", seed=0)
        _perturb_one_block(models["densekit"].model)
        return benchmark.diffs_against_timm(models, x, "fp32", "cpu")

    with pytest.raises(AssertionError, match="ConvNeXt-T maps disagree"):
        benchmark.check_agreement(perturbed_diffs(), "ConvNeXt-T maps")
    monkeypatch.setattr(bench_convnext, "spread_layer_scales", lambda model, seed=0: 0)
    benchmark.check_agreement(perturbed_diffs(), "ConvNeXt-T maps with 1e-6 layer scales")  # unseen


def test_upernet_convnext_t_suite():
    pytest.importorskip("transformers")
    result = _run_tool(["--suite", "upernet_convnext_t", "--no-peak-rss"])
    assert result.name == "upernet_convnext_t"
    # the suite is upernet_swin_t's with ConvNeXt-T: every densekit case has its accel-off row (the CPU)
    assert set(result.stats) == {"infer densekit", "infer HF transformers", "infer densekit bf16 autocast",
                                 "train densekit", "train HF transformers", "infer densekit (accel off)",
                                 "infer densekit bf16 autocast (accel off)", "train densekit (accel off)"}
    assert all(len(s.times) == 1 and s.median > 0 for s in result.stats.values())
    assert result.extra["max_abs_diff"] <= benchmark.AGREEMENT_TOL
    assert result.extra["peak_rss"] == {}  # --no-peak-rss
    rows = _ratio_rows(result.markdown, "HF transformers")
    assert set(rows) == {"densekit", "HF transformers", "densekit bf16 autocast", "densekit (accel off)",
                         "densekit bf16 autocast (accel off)"}
    assert result.markdown.count("| densekit |") == 2  # inference and training tables
    assert "configs/upernet_convnext_t_ade.py" in result.markdown and "U(0.5, 1)" in result.markdown


def test_upernet_agreement_check_catches_one_wrong_block():
    pytest.importorskip("transformers")
    from benchmarks.upernet import build_upernet_pair, checked_logits

    ours, hf = build_upernet_pair(seed=0, backbone="convnext_t")
    ours.eval(), hf.eval()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    diff, logits = checked_logits(ours, hf, x, "UPerNet-ConvNeXt-T")
    assert diff <= benchmark.AGREEMENT_TOL and logits.shape == (1, 150, SIZE, SIZE) and logits.std() > 0.1
    _perturb_one_block(ours.backbone.model)
    with pytest.raises(AssertionError, match="UPerNet-ConvNeXt-T disagree"):
        checked_logits(ours, hf, x, "UPerNet-ConvNeXt-T")


def test_unknown_upernet_backbone_is_named():
    from benchmarks.upernet import build_upernet_pair

    with pytest.raises(KeyError, match="convnext_t"):
        build_upernet_pair(backbone="convnext")
