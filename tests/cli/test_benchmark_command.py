"""``densekit benchmark CONFIG --shape H W`` (densekit/cli/benchmark.py over densekit/inference/benchmark.py): a
shipped config's model measured at a tiny size in every mode, the table's columns, the accel switch, a checkpoint,
and clear errors. One timed run each; nothing here asserts a time."""
from __future__ import annotations

import pytest
import torch
from mode_stubs import failing_compile

from densekit import accel
from densekit.cli import benchmark as command
from densekit.engine.config import load_config
from densekit.inference import benchmark as measure
from densekit.inference.timing import CUDA_PEAK, MAXRSS_GROWTH, RSS_PEAK
from densekit.models.builder import build_model

CONFIG = "upernet_swin_t_demo"  # by name: a shipped config, found from any directory
TINY = ["--shape", "64", "64", "--runs", "2", "--warmup", "1", "--threads", "1"]
COLUMNS = ("| config | mode | device | batch | input | accel | median ms | min ms | images/s | "
           "peak MiB above resident |")


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        command.parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in ("(default: 512 512)", "images per call (default: 1)", "(default: 10)", "(default: 3)",
                    "(default: fp32)", "(default: cpu)"):
        assert default in text, default
    assert "densekit benchmark upernet_swin_t_ade --shape 512 512" in text and "python -m benchmarks" in text


@pytest.mark.parametrize("mode", measure.MODES)
def test_every_mode_measures_and_prints_the_table(mode, monkeypatch, capsys):
    if mode == "compile":
        monkeypatch.setattr(torch, "compile", failing_compile(set()))  # no inductor or C++ compiler in the test
    result = command.main([CONFIG, *TINY, "--mode", mode])
    assert result.settings.mode == mode and result.settings.shape == (64, 64)
    assert len(result.stats.times) == 2 and 0 < result.stats.min <= result.stats.median
    assert result.images_per_s == pytest.approx(1 / result.stats.median)
    assert result.peak.method in (RSS_PEAK, MAXRSS_GROWTH) and result.peak.bytes >= 0
    out = capsys.readouterr().out
    header = COLUMNS + " torch.compile |" if mode == "compile" else COLUMNS
    assert header in out
    assert f"| {CONFIG} | {mode} | cpu | 1 | 1x3x64x64 | on |" in out
    assert "1 warm-up call(s), then 2 timed" in out and "peak memory: " in out
    assert (result.compiled == "compiled") if mode == "compile" else result.compiled is None


def test_modes_reach_the_model_and_the_input():
    """channels_last converts the convolutions and the batch; compile wraps encode_decode; bf16 autocasts."""
    cfg = load_config(CONFIG)
    settings = measure.BenchmarkSettings(shape=(64, 64), mode="channels_last", accel=False)
    model = build_model(cfg, pretrained=False).eval()
    x = measure.random_batch(model, settings)
    assert x.shape == (1, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    measure.inference_step(model, x, settings)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    bf16 = measure.BenchmarkSettings(shape=(64, 64), mode="bf16", accel=False)
    seen = []
    model = build_model(cfg, pretrained=False).eval()
    model.decode_head.register_forward_hook(lambda m, i, o: seen.append(torch.get_autocast_dtype("cpu")
                                                                         if torch.is_autocast_enabled("cpu")
                                                                         else None))
    measure.inference_step(model, measure.random_batch(model, bf16), bf16)()
    assert seen == [torch.bfloat16]


def test_batch_and_no_accel(monkeypatch, capsys):
    """--no-accel leaves the model as built (accel.optimize never called, restore puts back whatever init_model
    installed); without it optimize is called on the built model, as init_model does on the CPU."""
    calls = []
    real = accel.optimize
    monkeypatch.setattr(measure.cpu_accel, "optimize", lambda model, enabled=True: calls.append(model) or
                        real(model, enabled))
    result = command.main([CONFIG, *TINY, "--batch", "2", "--no-accel"])
    assert calls == [] and not result.settings.accel_on
    assert f"| {CONFIG} | fp32 | cpu | 2 | 2x3x64x64 | off |" in capsys.readouterr().out
    assert result.images_per_s == pytest.approx(2 / result.stats.median)

    model = measure.build_benchmark_model(CONFIG, measure.BenchmarkSettings(shape=(64, 64)))
    assert calls == [model]


def test_checkpoint_weights_are_loaded(tmp_path):
    cfg = load_config(CONFIG)
    model = build_model(cfg, pretrained=False)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.fill_(0.25)
    checkpoint = tmp_path / "model.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, checkpoint)
    settings = measure.BenchmarkSettings(shape=(64, 64), runs=1, warmup=0)
    loaded = measure.build_benchmark_model(CONFIG, settings, checkpoint=str(checkpoint))
    assert torch.equal(loaded.decode_head.conv_seg.weight, model.decode_head.conv_seg.weight)
    assert not loaded.training
    assert len(measure.benchmark_model(loaded, settings, CONFIG).stats.times) == 1


def test_bad_arguments_fail_clearly(capsys):
    with pytest.raises(ValueError, match="mode must be one of"):
        measure.BenchmarkSettings(mode="fp8")
    with pytest.raises(ValueError, match="shape, batch and runs must be positive"):
        measure.BenchmarkSettings(shape=(0, 64))
    with pytest.raises(FileNotFoundError, match="upernet_swin_t_demo"):
        command.main(["upernet_swin_t_dmeo", *TINY])  # the nearest shipped names are listed
    with pytest.raises(SystemExit):
        command.parse_args([CONFIG, "--mode", "fp16"])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch.cuda.is_available"):
            measure.BenchmarkSettings(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reports_the_allocator_peak(capsys):
    result = command.main([CONFIG, *TINY, "--device", "cuda", "--mode", "bf16"])
    assert result.peak.method == CUDA_PEAK and result.peak.bytes > 0
    assert f"| {CONFIG} | bf16 | cuda | 1 | 1x3x64x64 | off |" in capsys.readouterr().out
