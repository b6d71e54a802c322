"""The UPerNet suites' markdown (benchmarks.upernet._markdown) rendered from fabricated timings, no model run:
images/s in both tables on every device, and the GPU utilisation section only where a card was measured.
The suites themselves run in tests/benchmarks/test_harness.py."""
from __future__ import annotations

from benchmarks import mfu
from benchmarks.harness import BenchConfig, Stats
from benchmarks.upernet import BF16, HF, UPERNETS, _Inference, _markdown

FORWARD_FLOPS = 472e9  # one 512x512 image


def _fake_run(batch: int, cuda: bool = True) -> tuple[_Inference, dict[str, Stats]]:
    """What a bf16 run at ``batch`` might measure: inference 50 ms densekit, 80 ms HF; training 200 / 250 ms; CUDA
    allocator peaks (2, 3, 20, 24 GiB) where ``cuda``."""
    gib = 2**30 if cuda else None
    infer = {"densekit": Stats([0.05, 0.05], gib and 2 * gib), HF: Stats([0.08, 0.08], gib and 3 * gib)}
    train = {"densekit": Stats([0.2, 0.2], gib and 20 * gib), HF: Stats([0.25, 0.25], gib and 24 * gib)}
    return _Inference(infer, 0.03, None, int(batch * FORWARD_FLOPS), int(batch * FORWARD_FLOPS), 50e12, {}), train


def _render(batch: int, gpu: mfu.GpuRates | None) -> str:
    """``_markdown`` of a fabricated bf16 run; CUDA's allocator peaks where a ``gpu`` is given."""
    config = BenchConfig(size=(512, 512), batch=batch, runs=10, warmup=3, mode="bf16")
    inf, train = _fake_run(batch, cuda=gpu is not None)
    return _markdown(UPERNETS["swin_t"], config, inf, train, {}, max(2, batch), {}, gpu)


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_cpu_markdown_has_images_per_s_and_no_gpu_section():
    text = _render(16, None)
    assert "GPU utilisation" not in text and "MFU" not in text
    assert text.count("| implementation | median ms | min ms | ratio vs HF transformers | images/s |") == 2
    assert _row(text, "| densekit |") == "| densekit | 50.0 | 50.0 | 0.62 | 320 | 3.0e-02 | - |"  # 16 / 0.05 s
    assert _row(text, "| HF transformers | 250.0") == "| HF transformers | 250.0 | 250.0 | 1.00 | 64 | - |"
    assert text.endswith("2.25x fewer multiplies).\n")  # the section ends with the compute-rate note


def test_cuda_markdown_reports_throughput_mfu_and_peak_memory():
    gpu = mfu.GpuRates("NVIDIA H100 80GB HBM3", mfu.bf16_peak("NVIDIA H100 80GB HBM3"), 700e12)
    text = _render(16, gpu)
    assert "multiplies).\n\nGPU utilisation (NVIDIA H100 80GB HBM3)" in text
    assert "over the batch of 16, 472.0 GFLOP" in text and "989.4 TFLOPS (NVIDIA datasheet, H100 SXM)" in text
    # inference 320 images/s x 472 GFLOP = 151.0 TFLOP/s; training 80 images/s x 3 x 472 GFLOP = 113.3 TFLOP/s
    assert _row(text, "| inference: densekit |") == (
        "| inference: densekit | 320 | 472.0 | 151.0 | 15.3% | 21.6% | 2048 |")
    assert _row(text, "| training step: densekit |") == (
        "| training step: densekit | 80 | 1416.0 | 113.3 | 11.4% | 16.2% | 20480 |")
    assert _row(text, "| training step: HF transformers |") == (
        "| training step: HF transformers | 64 | 1416.0 | 90.6 | 9.2% | 12.9% | 24576 |")


def test_cuda_markdown_with_an_unknown_card():
    gpu = mfu.GpuRates("NVIDIA Blackwell Something", mfu.bf16_peak("NVIDIA Blackwell Something"), 1500e12)
    text = _render(16, gpu)
    assert text.count("| unknown peak (pass --peak-tflops) |") == 4
    assert "pass `--peak-tflops` to give it" in text


def test_fp32_run_lists_the_bf16_autocast_case_too():
    """fp32 runs time densekit under bf16 autocast as a third inference case; it gets a GPU row too."""
    config = BenchConfig(batch=2, mode="fp32")
    inf, train = _fake_run(2)
    inf.stats[BF16] = Stats([0.025])
    inf.same_labels = 0.998
    gpu = mfu.GpuRates("NVIDIA A100-SXM4-80GB", mfu.bf16_peak("NVIDIA A100-SXM4-80GB"), 250e12)
    text = _markdown(UPERNETS["swin_t"], config, inf, train, {}, 2, {}, gpu)
    assert _row(text, f"| {BF16} |") == f"| {BF16} | 25.0 | 25.0 | 0.31 | 80 | - | 99.80% | - |"
    assert _row(text, f"| inference: {BF16} |").startswith(f"| inference: {BF16} | 80 | 472.0 | 37.8 | 12.1% |")
    assert "This run's mode is `fp32`, not `bf16`" in text


def test_padded_token_text_only_for_windowed_backbones():
    """The compute-rate note explains padded window tokens for Swin, not for ConvNeXt, which has none."""
    config = BenchConfig(size=(512, 512), batch=1, runs=2, warmup=0, mode="bf16")
    inf, train = _fake_run(1, cuda=False)
    texts = {name: _markdown(pair, config, inf, train, {}, 2, {}) for name, pair in UPERNETS.items()}
    assert "skips the projections of padded tokens" in texts["swin_t"]
    assert "padded window tokens, so this is the published count" in texts["swin_t"]
    assert "padded" not in texts["convnext_t"]
    assert all("Winograd F(2x2, 3x3)" in text for text in texts.values())
