"""The ``vit_b_backbone`` benchmark suite at 64x64, one round: it runs through the CLI, gives a ratio row per case,
passes its agreement check, and that check fails when the weights differ."""
from __future__ import annotations

import pytest
import torch

from benchmarks import harness as benchmark
from benchmarks import run
from benchmarks import vit as bench_vit

SIZE = 64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_vit_b_backbone_suite(tmp_path):
    doc = tmp_path / "benchmarks.md"
    result = run.main(["--suite", "vit_b_backbone", "--size", str(SIZE), str(SIZE), "--runs", "1", "--warmup", "0",
                       "--threads", "1", "--write", "--docs", str(doc)])
    assert result.name == "vit_b_backbone" and list(result.stats) == ["densekit", "timm"]
    assert all(len(s.times) == 1 and s.median > 0 for s in result.stats.values())
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL
    text = doc.read_text()
    assert "<!-- bench:vit_b_backbone.cpu.fp32 -->" in text and "densekit / timm (median)" in text


def test_vit_b_backbone_agreement_check_catches_one_wrong_block():
    models = bench_vit.build_vit_b_models("cpu", (SIZE, SIZE))
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    benchmark.check_agreement(benchmark.diffs_against_timm(models, x, "fp32", "cpu"), "identical weights")
    with torch.no_grad():
        weight = models["densekit"].model.blocks[2].mlp.fc1.weight
        weight.add_(1e-2 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    diffs = benchmark.diffs_against_timm(models, x, "fp32", "cpu")
    with pytest.raises(AssertionError, match="disagree"):
        benchmark.check_agreement(diffs, "ViT-B/16 maps with one wrong block")


def test_vit_b_backbone_refuses_partial_patches():
    with pytest.raises(ValueError, match="multiples of 16"):
        run.run_suite("vit_b_backbone", benchmark.BenchConfig(size=(60, 64), runs=1, warmup=0))
