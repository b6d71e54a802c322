"""The ``rpn_r50_fpn`` benchmark suite (benchmarks.rpn): runs through the CLI at a tiny size, its head check
fails on a weight that differs, and its helpers (settings copy, min-size rule, proposal overlap) do what they say."""
from __future__ import annotations

import pytest
import torch
from mode_stubs import failing_compile, record_prepare_model
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.ops import remove_small_boxes

from benchmarks import harness as benchmark
from benchmarks import rpn as bench_rpn
from benchmarks.run import main, run_suite
from densekit.heads import RPNHead


def test_suite_runs_through_the_cli_with_both_rows_and_agreeing_heads(tmp_path):
    threads = torch.get_num_threads()
    doc = tmp_path / "benchmarks.md"
    try:
        result = main(["--suite", "rpn_r50_fpn", "--size", "128", "128", "--runs", "1", "--warmup", "0",
                       "--threads", "1", "--write", "--docs", str(doc)])
    finally:
        torch.set_num_threads(threads)
    assert list(result.stats) == ["densekit", "torchvision"]
    assert all(len(s.times) == 1 and s.median > 0 for s in result.stats.values())
    checked = result.extra["agreement"]["fp32"]
    assert checked["head_diff"] <= bench_rpn.HEAD_TOL
    assert checked["head_max"] > 1  # the calibrated head's outputs are not all near zero
    assert 900 < checked["count"] <= 1000 and 900 < checked["peer_count"] <= 1000  # 3 x 32 x 32 anchors at P2
    assert checked["match"] > 0.5  # same weights and settings: most of the best proposals coincide
    text = doc.read_text()
    assert "<!-- bench:rpn_r50_fpn.cpu.fp32 -->" in text and "| densekit |" in text and "| torchvision |" in text
    assert "| `nms_pre` (per level) | 2000 | `_pre_nms_top_n['testing']` | 2000 |" in text


def _run_suite(mode: str) -> benchmark.SuiteResult:
    """The suite at 128x128, one round, no warm-up, in ``mode``."""
    return run_suite("rpn_r50_fpn", benchmark.BenchConfig(size=(128, 128), runs=1, warmup=0, mode=mode))


def test_suite_channels_last_converts_both_models_after_the_fp32_check(monkeypatch):
    prepared = record_prepare_model(monkeypatch, bench_rpn)
    result = _run_suite("channels_last")
    assert sorted(prepared) == [("densekit", "channels_last"), ("torchvision", "channels_last")]
    assert result.extra["agreement"]["fp32"]["head_diff"] <= bench_rpn.HEAD_TOL
    run = result.extra["agreement"]["channels_last"]
    assert run["head_diff"] < 1e-3 and run["match"] > 0.5  # same weights, another memory format
    assert "compile" not in result.extra and list(result.stats) == ["densekit", "torchvision"]
    assert result.title == "RPN R50-FPN proposals, 128x128, batch 1, channels_last, cpu"
    assert "Mode `channels_last`" in result.markdown and "head max abs diff vs torchvision, channels_last" in (
        result.markdown)


def test_suite_compile_compiles_both_feature_paths_and_reports_a_fallback(monkeypatch):
    """compile mode compiles densekit's extract_feat and head, torchvision's backbone and head (in that order);
    densekit's head fails at its first call here, so densekit's row is an eager fallback, torchvision's
    compiled (the stand-in returns the functions as they are)."""
    from densekit.engine.compile import CompileFallbackWarning

    monkeypatch.setattr(torch, "compile", failing_compile({2}))
    with pytest.warns(CompileFallbackWarning, match="torch.compile of RPNHead.forward failed") as record:
        result = _run_suite("compile")
    assert len(record) == 1
    assert result.extra["compile"]["torchvision"] == "compiled"
    assert result.extra["compile"]["densekit"].startswith("eager (the compiled call raised RuntimeError: C++")
    assert result.extra["agreement"]["compile"]["head_diff"] <= bench_rpn.HEAD_TOL  # eager and 'compiled' alike
    assert "| torch.compile |" in result.markdown and "| compiled |" in result.markdown
    assert "| eager fallback |" in result.markdown and "Fell back to eager: `densekit`: eager (" in result.markdown
    assert "decoding, top-k and NMS, whose sizes depend on the data, stay eager in both" in result.markdown


def test_head_check_sees_one_batchnorm_statistic_off_by_one_percent():
    ours, peer = bench_rpn.build_rpn_pair(seed=1)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert bench_rpn._agreement(ours, peer, x, "fp32", "cpu")["head_diff"] <= bench_rpn.HEAD_TOL
    with torch.no_grad():
        ours.backbone.model.layer1[0].bn1.running_var[0] *= 1.01
    assert bench_rpn._agreement(ours, peer, x, "fp32", "cpu")["head_diff"] > bench_rpn.HEAD_TOL


def _tiny_torchvision_rpn(sizes: tuple[int, ...]) -> RegionProposalNetwork:
    anchors = TVAnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=((0.5, 1.0, 2.0),) * len(sizes))
    return RegionProposalNetwork(anchors, TVRPNHead(8, 3), 0.7, 0.3, 256, 0.5, dict(training=1, testing=1),
                                 dict(training=1, testing=1), 0.5)


def test_match_rpn_settings_copies_the_test_cfg_and_refuses_other_anchors():
    head = RPNHead(in_channels=8, feat_channels=8, test_cfg=dict(nms_pre=300, max_per_img=50, min_bbox_size=2,
                                                                 nms=dict(type="nms", iou_threshold=0.6)))
    rpn = _tiny_torchvision_rpn((32, 64, 128, 256, 512))
    bench_rpn.match_rpn_settings(rpn, head)
    assert rpn._pre_nms_top_n == dict(training=300, testing=300)
    assert rpn._post_nms_top_n == dict(training=50, testing=50)
    assert (rpn.nms_thresh, rpn.score_thresh) == (0.6, 0.0) and 2 < rpn.min_size < 2.001
    with pytest.raises(ValueError, match="anchors differ"):
        bench_rpn.match_rpn_settings(_tiny_torchvision_rpn((16, 32, 64, 128, 256)), head)


@pytest.mark.parametrize("min_bbox_size", [-1.0, 0.0, 1.0, 2.5])
def test_torchvision_min_size_keeps_what_densekit_keeps(min_bbox_size):
    sides = torch.tensor([0.0, 1e-4, 0.999, 1.0, 1.0001, 2.5, 2.5001, 3.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, torch.full_like(sides, 5)], 1)
    expected = torch.arange(len(sides)) if min_bbox_size < 0 else torch.nonzero(sides > min_bbox_size).flatten()
    kept = remove_small_boxes(boxes, bench_rpn.torchvision_min_size(min_bbox_size))
    assert torch.equal(kept, expected)


def test_top_k_match_counts_densekit_boxes_found_in_torchvision_top_k():
    ours = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
            torch.tensor([[0.0, 0, 10, 10]])]
    theirs = [torch.tensor([[20.0, 20, 30, 30.5], [0, 0, 10, 12], [50, 50, 60, 60]]),
              torch.zeros(0, 4)]
    # image 0: box 1 matches (IoU 0.95), box 0 does not (IoU 10/12 = 0.83), box 2 is outside theirs' top 2
    assert bench_rpn.top_k_match(ours, theirs, k=2, iou=0.9) == pytest.approx(1 / 3)
    assert bench_rpn.top_k_match(ours, theirs, k=3, iou=0.9) == pytest.approx(2 / 4)
    assert bench_rpn.top_k_match(ours, theirs, k=3, iou=0.8) == pytest.approx(3 / 4)
