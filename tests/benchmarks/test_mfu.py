"""Model FLOPs utilisation (benchmarks.mfu) without a GPU: the peak lookup, the arithmetic, the GPU table with
fabricated numbers, and ``measure_gpu``'s wiring with the CUDA calls stood in for."""
from __future__ import annotations

import pytest
import torch

from benchmarks import mfu
from benchmarks.harness import Stats
from benchmarks.mfu import GpuRates, Peak, Throughput

H100_SXM = "NVIDIA H100 80GB HBM3"  # what torch.cuda.get_device_name() says on an H100 SXM


@pytest.mark.parametrize("name, tflops, card", [
    (H100_SXM, 989.4, "H100 SXM"),
    ("NVIDIA H100 PCIe", 756.0, "H100 PCIe"),
    ("NVIDIA H100 NVL", 835.0, "H100 NVL"),
    ("NVIDIA H200", 989.4, "H200 SXM"),
    ("NVIDIA H200 NVL", 835.0, "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", 312.0, "A100"),
    ("NVIDIA A100 80GB PCIe", 312.0, "A100"),
    ("NVIDIA L40S", 362.0, "L40S"),
    ("NVIDIA A10", 125.0, "A10"),
    ("NVIDIA GeForce RTX 4090", 165.2, "RTX 4090"),
    ("nvidia h100 pcie", 756.0, "H100 PCIe"),  # case does not matter
])
def test_datasheet_peaks(name, tflops, card):
    assert mfu.datasheet_bf16_tflops(name) == (card, tflops)
    assert mfu.bf16_peak(name) == Peak(tflops * 1e12, f"NVIDIA datasheet, {card}")


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA L40", "NVIDIA GH200 480GB", "Tesla V100-SXM2-16GB", ""])
def test_unknown_cards_have_no_peak(name):
    """Whole-word matching: an A10G is not an A10, an L40 not an L40S, a GH200 not an H200."""
    assert mfu.datasheet_bf16_tflops(name) is None
    assert mfu.bf16_peak(name) == Peak(None, "not in densekit's table")


def test_peak_tflops_option_overrides_the_table():
    assert mfu.bf16_peak(H100_SXM, peak_tflops=500.0) == Peak(500e12, "--peak-tflops")
    assert mfu.bf16_peak("Some Future GPU", peak_tflops=2000.0) == Peak(2000e12, "--peak-tflops")


def test_mfu_arithmetic():
    assert mfu.mfu(400e12, 1000e12) == pytest.approx(0.4)
    assert mfu.mfu(400e12, None) is None
    case = Throughput("training step: densekit", images=16, seconds=0.08, flops_per_image=3 * 472e9)
    assert case.images_per_s == pytest.approx(200.0)
    assert case.flops_per_s == pytest.approx(200 * 3 * 472e9)  # 283.2 TFLOP/s
    assert mfu.mfu(case.flops_per_s, 989.4e12) == pytest.approx(283.2 / 989.4)


def test_throughputs_credit_training_three_forwards():
    infer = {"densekit": Stats([0.04, 0.05, 0.06], peak_mem=2**30), "HF transformers": Stats([0.1])}
    train = {"densekit": Stats([0.2]), "HF transformers": Stats([0.25], peak_mem=3 * 2**30)}
    cases = mfu.throughputs(infer, train, batch=16, train_batch=16, forward_flops_per_image=472e9)
    assert [c.case for c in cases] == ["inference: densekit", "inference: HF transformers",
                                       "training step: densekit", "training step: HF transformers"]
    assert [c.flops_per_image for c in cases] == [472e9, 472e9, 3 * 472e9, 3 * 472e9]
    assert [c.seconds for c in cases] == [0.05, 0.1, 0.2, 0.25]  # medians
    assert [c.peak_mem for c in cases] == [2**30, None, None, 3 * 2**30]
    assert cases[0].images_per_s == pytest.approx(320.0)


def test_images_per_s_text():
    assert [mfu.images_per_s_text(v) for v in (0.1071, 5.3, 312.44, 999.4, 1234.5)] == [
        "0.107", "5.3", "312", "999", "1234"]


def _fake_cases() -> list[Throughput]:
    return [Throughput("inference: densekit", 16, 0.05, 472e9, 2**30),
            Throughput("training step: densekit", 16, 0.2, 3 * 472e9, None)]


def test_utilisation_table_and_markdown_with_a_known_peak():
    gpu = GpuRates(H100_SXM, mfu.bf16_peak(H100_SXM), 700e12)
    text = mfu.utilisation_markdown(_fake_cases(), gpu, "bf16", "472.0 GFLOP")
    assert "GPU utilisation (NVIDIA H100 80GB HBM3)" in text
    assert "a training step 3x the forward's (forward + backward ~ 2x" in text
    assert "989.4 TFLOPS (NVIDIA datasheet, H100 SXM)" in text and "700.0 TFLOPS (8192x8192" in text
    assert "not `bf16`" not in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # inference: 320 images/s x 472 GFLOP = 151.0 TFLOP/s = 15.3% of 989.4, 21.6% of 700; 1024 MiB
    assert rows["inference: densekit"] == "| inference: densekit | 320 | 472.0 | 151.0 | 15.3% | 21.6% | 1024 |"
    # training: 80 images/s x 1416 GFLOP = 113.3 TFLOP/s
    assert rows["training step: densekit"] == "| training step: densekit | 80 | 1416.0 | 113.3 | 11.4% | 16.2% | - |"
    assert mfu.utilisation_extra(_fake_cases(), gpu)["mfu"]["inference: densekit"] == pytest.approx(151.04 / 989.4)


def test_unknown_peak_does_not_fail_and_says_what_to_pass():
    gpu = GpuRates("NVIDIA A10G", mfu.bf16_peak("NVIDIA A10G"), 60e12)
    text = mfu.utilisation_markdown(_fake_cases(), gpu, "fp32", "472.0 GFLOP")
    assert text.count(f"| {mfu.UNKNOWN_PEAK} |") == 2
    assert "'NVIDIA A10G' is not in densekit's table" in text and "pass `--peak-tflops`" in text
    assert "This run's mode is `fp32`, not `bf16`" in text
    assert "| 251.7% |" in text  # against the measured matmul rate, still reported
    extra = mfu.utilisation_extra(_fake_cases(), gpu)
    assert extra["peak_tflops"] is None and extra["mfu"] == {"inference: densekit": None,
                                                             "training step: densekit": None}


def test_measure_gpu_wiring(monkeypatch):
    """The card's name goes to the lookup, the matmul is timed in bf16 at 8192 on CUDA (CUDA calls stood in)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "NVIDIA H100 PCIe")
    monkeypatch.setattr(mfu, "gemm_rate", lambda **kwargs: calls.append(kwargs) or 600e12)
    assert mfu.measure_gpu() == GpuRates("NVIDIA H100 PCIe", Peak(756e12, "NVIDIA datasheet, H100 PCIe"), 600e12)
    assert calls == [{"size": 8192, "device": "cuda", "dtype": torch.bfloat16}]
    assert mfu.measure_gpu(peak_tflops=700.0).peak == Peak(700e12, "--peak-tflops")
