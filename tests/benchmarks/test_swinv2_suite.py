"""The ``swinv2_t_backbone`` benchmark suite (benchmarks.swin_v2): densekit's Swin V2-T against timm's
``swinv2_tiny_window8_256`` at a tiny size through ``python -m benchmarks``, its windows, and its accel-off row."""
from __future__ import annotations

import pytest
import torch

from benchmarks import harness as benchmark
from benchmarks import run
from benchmarks import swin_v2 as bench_v2


def test_bench_window_scales_the_trained_window_and_refuses_unchecked_sizes():
    assert bench_v2.bench_window((256, 256)) == 8
    assert bench_v2.bench_window((64, 128)) == 8
    assert bench_v2.bench_window((512, 512)) == 16
    with pytest.raises(ValueError, match=r"at 100x76 stage 0 is 25 tokens wide, not a multiple of window 8"):
        bench_v2.bench_window((100, 76))


def test_window_16_models_read_the_window_8_weights_with_pretrained_window_8():
    ours, peers = bench_v2.build_swinv2_t_models((512, 512), "cpu")
    dk, tm = ours["densekit"], peers["timm"]
    assert dk.window_size == 16 and dk.pretrained_window_size == (8, 8, 8, 8)
    assert tm.layers[0].blocks[0].attn.window_size == (16, 16)
    assert tm.layers[0].blocks[0].attn.pretrained_window_size == (8, 8)
    assert torch.equal(dk.stages[2].blocks[3].attn.cpb_mlp[0].weight, tm.layers[2].blocks[3].attn.cpb_mlp[0].weight)
    assert "densekit (accel off)" in ours and "densekit (reference attn)" in ours


def test_swinv2_t_backbone_suite(tmp_path, capsys):
    """The whole CLI path on a tiny input: build, agreement check, interleaved timing, docs section."""
    threads = torch.get_num_threads()
    doc = tmp_path / "benchmarks.md"
    try:
        result = run.main(["--suite", "swinv2_t_backbone", "--size", "64", "64", "--runs", "1", "--warmup", "0",
                           "--threads", "1", "--write", "--docs", str(doc)])
    finally:
        torch.set_num_threads(threads)
    names = ["densekit", "densekit (accel off)", "densekit (reference attn)", "timm"]
    assert list(result.stats) == names
    assert result.extra["window"] == 8
    assert set(result.extra["check_diffs"]) == set(names)
    assert max(result.extra["check_diffs"].values()) <= benchmark.AGREEMENT_TOL
    text = doc.read_text()
    assert "<!-- bench:swinv2_t_backbone.cpu.fp32 -->" in text
    assert "python -m benchmarks --suite swinv2_t_backbone --size 64 64 --runs 1 --warmup 0" in text
    for name in names:
        assert f"| {name} |" in text
    assert "densekit / timm (median): **" in text and "; `densekit.accel` on / off: **" in text
    assert "updated section" in capsys.readouterr().out
