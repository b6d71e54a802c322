"""Smoke tests of the benchmark machinery (benchmarks.harness, benchmarks.run: ``python -m benchmarks``): fast,
tiny inputs. The Swin-T backbone suite's tests are in test_swin_suite.py, the timing's in
tests/inference/test_timing.py."""
from __future__ import annotations

import pytest
import torch

from benchmarks import harness as benchmark
from benchmarks import run
from benchmarks.run import run_suite


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


def test_bad_config():
    with pytest.raises(ValueError):
        benchmark.BenchConfig(mode="fp8")
    with pytest.raises(KeyError, match="swin_t_backbone"):
        run_suite("nope", benchmark.BenchConfig())


def test_cuda_config_without_cuda_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"--device cuda asked for, but torch.cuda.is_available\(\) is False"):
        benchmark.BenchConfig(device="cuda")
    with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
        run.main(["--suite", "upernet_swin_t", "--device", "cuda", "--mode", "bf16", "--batch", "16"])


def test_peak_tflops_option_reaches_the_config(monkeypatch):
    """``--peak-tflops`` (default None: look the card up) lands in ``BenchConfig.peak_tflops``; not positive fails."""
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="peak_tflops must be positive"):
            benchmark.BenchConfig(peak_tflops=bad)
    assert run.parse_args([]).peak_tflops is None
    configs = []

    def fake_run(name: str, config: benchmark.BenchConfig) -> benchmark.SuiteResult:
        configs.append(config)
        return benchmark.SuiteResult(name, "fake", {}, "body")

    monkeypatch.setattr(run, "run_suite", fake_run)
    run.main(["--suite", "upernet_swin_t", "--peak-tflops", "500", "--threads", str(torch.get_num_threads())])
    assert configs[0].peak_tflops == 500.0


def test_upernet_suite_smoke():
    """The UPerNet suite checks agreement with HF and times inference and a training step (256x256: every
    stage is larger than the window, where HF's SwinBackbone and official Swin agree)."""
    pytest.importorskip("transformers")
    result = run_suite("upernet_swin_t", benchmark.BenchConfig(size=(256, 256), runs=1, warmup=0, peak_rss=False))
    assert result.extra["max_abs_diff"] < 1e-4
    assert set(result.stats) == {"infer densekit", "infer HF transformers", "infer densekit bf16 autocast",
                                 "train densekit", "train HF transformers", "infer densekit (accel off)",
                                 "infer densekit bf16 autocast (accel off)", "train densekit (accel off)"}
    assert result.extra["same_labels_bf16"] > 0.9 and 0 < result.extra["gflops"] < 1000
    assert "Training step" in result.markdown and all(s.median > 0 for s in result.stats.values())
    assert result.extra["images_per_s"]["train densekit"] == pytest.approx(2 / result.stats["train densekit"].median)
    assert result.markdown.count("| images/s |") == 2
    assert "gpu" not in result.extra and "GPU utilisation" not in result.markdown  # CUDA runs only


def test_peak_rss_of_a_step_in_its_own_process():
    """A step that holds a 64 MiB tensor at its peak reports at least that much above the resident set."""
    peak = benchmark.peak_rss_above_resident("tests.benchmarks.test_harness", "_allocating_step", {"mib": 64},
                                             threads=1)
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


def test_model_flops_counts_the_fused_cpu_inference_path():
    """Under inference mode densekit's optimized Swin runs oneDNN fused linears (plain and with a residual add) and
    CPU flash attention, ops torch's counter does not know: they count as the autograd path's matmuls do."""
    from densekit.accel import optimize
    from densekit.accel.fused_linear import cpu_inference
    from densekit.backbones.swin import SwinTransformer

    model = optimize(SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)).eval())
    x = torch.randn(1, 3, 112, 112)  # every stage a window multiple: both paths do the same work
    reference = benchmark.model_flops(lambda: model(x))  # autograd on: the reference path, aten matmuls
    with torch.inference_mode():
        assert cpu_inference(x)
        fused = benchmark.model_flops(lambda: model(x))
    assert fused == reference
    patch_embed = 2 * 28 * 28 * 16 * 3 * 4 * 4
    assert fused > 10 * patch_embed


# --------------------------------------------------------------------------- modes: fp32, bf16, channels_last, compile
# The stand-ins of tests/mode_stubs.py are imported in the tests, not at the top: the peak-RSS test imports
# this file as tests.benchmarks.test_harness in a process of its own, where tests/ is not on sys.path.


def test_modes_are_accepted_and_get_their_own_sections():
    assert benchmark.MODES == ("fp32", "bf16", "channels_last", "compile")
    for mode in benchmark.MODES:
        config = benchmark.BenchConfig(mode=mode)
        assert benchmark.section_name("upernet_swin_t", config) == f"upernet_swin_t.cpu.{mode}"
    assert run.parse_args(["--mode", "channels_last"]).mode == "channels_last"


def test_prepare_model_input_and_step():
    from densekit.engine.compile import CompiledOrEager

    conv, x = torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    for mode in ("fp32", "bf16", "compile"):
        assert benchmark.prepare_model(conv, mode) is conv and conv.weight.is_contiguous()
        assert benchmark.prepare_input(x, mode) is x
    assert benchmark.prepare_model(conv, "channels_last") is conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert benchmark.prepare_input(x, "channels_last").is_contiguous(memory_format=torch.channels_last)

    step = lambda: 1  # noqa: E731
    for mode in ("fp32", "bf16", "channels_last"):
        assert benchmark.prepare_step(step, mode, "step") is step
    compiled = benchmark.prepare_step(step, "compile", "step")
    assert isinstance(compiled, CompiledOrEager) and compiled.name == "step"


def test_mode_note_and_column():
    for mode in ("fp32", "bf16"):
        assert benchmark.mode_note(mode, {}) == "" and benchmark.mode_column(mode, {}) == ([], {})
    assert "torch.channels_last" in benchmark.mode_note("channels_last", {})
    statuses = {"a": "compiled", "b": "eager (the compiled call raised RuntimeError: boom)"}
    assert benchmark.mode_column("compile", statuses) == (["torch.compile"], {"a": ["compiled"],
                                                                              "b": ["eager fallback"]})
    note = benchmark.mode_note("compile", statuses)
    assert "compile time is not in the timings" in note
    assert "Fell back to eager: `b`: eager (the compiled call raised RuntimeError: boom)" in note
    assert "Every case ran compiled." in benchmark.mode_note("compile", {"a": "compiled"})


def test_upernet_suite_compile_falls_back_to_eager(monkeypatch):
    """All six steps (inference and training; densekit, densekit with accel off and HF) fail to compile: the
    suite still times them eagerly, says so, and drops fp32's extra bf16 cases. UPerNet-ConvNeXt-T at 64x64 (the
    suites share ``upernet_suite``): the fp32 agreement check runs first in every mode, and Swin-T agrees with HF's only
    where every stage is larger than the window (see test_upernet_suite_smoke)."""
    pytest.importorskip("transformers")
    from mode_stubs import failing_compile

    from densekit.engine.compile import CompileFallbackWarning

    monkeypatch.setattr(torch, "compile", failing_compile({1, 2, 3, 4, 5, 6}))
    with pytest.warns(CompileFallbackWarning) as record:
        result = run_suite("upernet_convnext_t", benchmark.BenchConfig(size=(64, 64), runs=1, warmup=0,
                                                                       mode="compile", peak_rss=False))
    assert len(record) == 6
    cases = {f"{step} {impl}" for step in ("infer", "train")
             for impl in ("densekit", "densekit (accel off)", "HF transformers")}
    assert set(result.extra["compile"]) == cases
    assert all(s.startswith("eager (") for s in result.extra["compile"].values())
    assert set(result.stats) == cases
    assert result.extra["max_abs_diff"] <= benchmark.AGREEMENT_TOL  # compile mode's diff (here eager), reported
    assert result.markdown.count("| eager fallback |") == 6 and "enforced in fp32 mode" in result.markdown


def test_upernet_suite_checks_fp32_agreement_in_every_mode():
    """channels_last does not skip the fp32 check: UPerNet-Swin-T at 64x64 (stages smaller than the window,
    where HF's Swin pads differently) fails it before anything is timed, as in fp32 and bf16."""
    pytest.importorskip("transformers")
    with pytest.raises(AssertionError, match="UPerNet-Swin-T logits against HF's at 64x64 disagree"):
        run_suite("upernet_swin_t", benchmark.BenchConfig(size=(64, 64), runs=1, warmup=0, mode="channels_last",
                                                          peak_rss=False))


@pytest.mark.parametrize("mode", ["channels_last", "compile"])
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")  # no organ in 2 slices
def test_swin_unet_volume_suite_new_modes(monkeypatch, mode):
    """Both loops call the one model: channels_last converts it (and the accel-off copy), compile compiles its
    forward (here the stand-in compile returns it as it is); the fp32/bf16 pair of densekit cases becomes one case,
    beside its accel-off row."""
    from mode_stubs import failing_compile

    from benchmarks import volume as bench_volume

    monkeypatch.setattr(bench_volume, "TRAIN_ITERS", 1)  # the fit only makes the labels organs; not needed here
    monkeypatch.setattr(torch, "compile", failing_compile(set()))
    result = run_suite("swin_unet_volume", benchmark.BenchConfig(size=(32, 32), batch=2, runs=1, warmup=0, mode=mode))
    assert list(result.stats) == ["official loop (zoom)", "densekit", "densekit (accel off)"]
    assert f"model input 224x224, {mode}, cpu" in result.title and f"Mode `{mode}`" in result.markdown
    assert result.extra["agreement"]["densekit"] > 0.5
    if mode == "compile":
        assert result.extra["compile"] == {"official loop (zoom)": "compiled", "densekit": "compiled",
                                           "densekit (accel off)": "compiled"}
