"""Benchmark suite ``upernet_swin_t``: UPerNet-Swin-T against HuggingFace ``UperNetForSemanticSegmentation``.

Both models hold identical random weights (HF's, converted with ``convert_hf_upernet``); agreement of
the upsampled logits is checked before timing. Timed: inference (logits at the input size) and one
training step (forward with loss, backward, AdamW step) per model, interleaved A/B in one process.
Registered in ``densekit.benchmark`` on import (``tools/benchmark.py`` imports it).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from torch import nn

from .benchmark import (
    AGREEMENT_TOL,
    BenchConfig,
    SuiteResult,
    _ms,
    compare,
    compile_statuses,
    gemm_rate,
    inference_case,
    max_abs_diff,
    mode_column,
    mode_note,
    model_flops,
    peak_rss_above_resident,
    prepare_input,
    prepare_model,
    prepare_step,
    register_suite,
    results_table,
)
from .structures import SegDataSample

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "upernet_swin_t_ade.py"
NUM_CLASSES = 150
BF16 = "densekit bf16 autocast"


def build_upernet_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(densekit EncoderDecoder, HF UperNetForSemanticSegmentation) for Swin-T, same weights, BatchNorm."""
    import transformers
    from mmengine.config import Config

    from .convert.hf_upernet import convert_hf_upernet
    from .models import EncoderDecoder

    backbone = transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                       drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    hf_config = transformers.UperNetConfig(backbone_config=backbone, num_labels=NUM_CLASSES, hidden_size=512,
                                           auxiliary_in_channels=384, use_auxiliary_head=True)
    torch.manual_seed(seed)
    hf = transformers.UperNetForSemanticSegmentation(hf_config)
    cfg = copy.deepcopy(Config.fromfile(str(CONFIG)).model.to_dict())
    cfg.pop("type")
    cfg["backbone"].update(drop_path_rate=0.0, pretrained=None)
    for head in ("decode_head", "auxiliary_head"):
        cfg[head].update(norm="BN", num_classes=NUM_CLASSES)
    ours = EncoderDecoder(**cfg)
    converted, unmapped = convert_hf_upernet(hf.state_dict())
    ours.load_state_dict(converted, strict=True)
    return ours, hf


def _inference(ours: nn.Module, hf: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], list[torch.Tensor]]]:
    def densekit() -> list[torch.Tensor]:
        logits = ours(x, mode="tensor")
        return [F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)]

    return {"densekit": densekit, "HF transformers": lambda: [hf(pixel_values=x).logits]}


def _train_steps(ours: nn.Module, hf: nn.Module, x: torch.Tensor, labels: torch.Tensor
                 ) -> dict[str, Callable[[], None]]:
    """One AdamW step each: densekit's decode + 0.4 aux cross-entropy, HF's (the same losses)."""
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=6e-5, weight_decay=0.01)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=6e-5, weight_decay=0.01)
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels]

    def densekit() -> None:
        losses = ours(x, samples, mode="loss")
        sum(v for k, v in losses.items() if "loss" in k).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def huggingface() -> None:
        hf(pixel_values=x, labels=labels).loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    return {"densekit": densekit, "HF transformers": huggingface}


def train_step(impl: str, height: int, width: int, batch: int = 2, seed: int = 0) -> Callable[[], None]:
    """One training step of ``impl`` (``'densekit'`` or ``'HF transformers'``) alone, for measuring its peak
    memory in a process of its own (``peak_rss_above_resident``)."""
    ours, hf = build_upernet_pair(seed)
    ours.train(), hf.train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, height, width, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (batch, height, width), generator=gen)
    # The other model stays resident (weights only: AdamW makes its state at the first step), which the
    # measurement subtracts.
    return _train_steps(ours, hf, x, labels)[impl]


@register_suite
def upernet_swin_t(config: BenchConfig) -> SuiteResult:
    """UPerNet-Swin-T inference and training step, densekit against HF transformers on identical weights."""
    h, w = config.size
    dev = config.device
    ours, hf = build_upernet_pair(config.seed)
    ours, hf = prepare_model(ours.to(dev).eval(), config.mode), prepare_model(hf.to(dev).eval(), config.mode)
    gen = torch.Generator().manual_seed(config.seed)
    x = prepare_input(torch.randn(config.batch, 3, h, w, generator=gen).to(dev), config.mode)
    forwards = _inference(ours, hf, x)
    steps = {f"infer {n}": prepare_step(f, config.mode, f"infer {n}") for n, f in forwards.items()}
    infer = {n: inference_case(steps[f"infer {n}"], config.mode, dev) for n in forwards}
    ours_logits = infer["densekit"]()
    diff = max_abs_diff(ours_logits, infer["HF transformers"]())
    if config.mode == "fp32" and diff > AGREEMENT_TOL:
        raise AssertionError(f"UPerNet logits disagree with HF beyond {AGREEMENT_TOL}: {diff:.2e}")
    same_labels = None
    if config.mode == "fp32":  # bf16 autocast against HF's fp32 time, and against densekit's fp32 labels
        infer[BF16] = inference_case(forwards["densekit"], "bf16", dev)
        same_labels = float((infer[BF16]()[0].argmax(1) == ours_logits[0].argmax(1)).float().mean())
    infer_stats = compare(infer, config.warmup, config.runs, dev)
    with torch.inference_mode():
        flops = model_flops(forwards["densekit"])
    rate = gemm_rate(device=dev)
    achieved = flops / infer_stats["densekit"].median

    ours.train(), hf.train()
    # BatchNorm cannot train on one image at the 1x1 pyramid-pooling scale (HF's and mmseg's alike).
    train_batch = max(2, config.batch)
    xt = prepare_input(torch.randn(train_batch, 3, h, w, generator=gen).to(dev), config.mode)
    labels = torch.randint(0, NUM_CLASSES, (train_batch, h, w), generator=gen).to(dev)
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=config.mode == "bf16")

    def with_autocast(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with autocast:
                fn()

        return run

    train_steps = _train_steps(ours, hf, xt, labels)
    steps.update({f"train {n}": prepare_step(f, config.mode, f"train {n}") for n, f in train_steps.items()})
    train = {n: with_autocast(steps[f"train {n}"]) for n in train_steps}
    # At least one warm-up round: AdamW makes its state at the first step (and compile mode compiles there).
    train_stats = compare(train, max(1, config.warmup), config.runs, dev)
    peak = {}
    if dev == "cpu" and config.peak_rss and config.mode == "fp32":
        for name in train:
            peak[name] = peak_rss_above_resident(__name__, "train_step", dict(impl=name, height=h, width=w,
                                                                             batch=train_batch, seed=config.seed))

    peak_ratio = peak["densekit"] / peak["HF transformers"] if len(peak) == 2 else None
    size = f"{h}x{w}"
    title = f"UPerNet-Swin-T, {size}, batch {config.batch}, {config.mode}, {dev}"
    peak_text = (f", peak memory of a training step **{peak_ratio:.2f}x** HF's (each measured in a process of its "
                 "own: `VmHWM` after resetting it, minus the resident set before the step; those processes run "
                 "after the timed rounds, and the machine table counts them as other processes' CPU use)"
                 ) if peak_ratio else ""
    bf16_text = (f" `{BF16}` is densekit under `torch.autocast('{dev}', dtype=torch.bfloat16)` timed in the same "
                 f"rounds: **{infer_stats[BF16].median / infer_stats['HF transformers'].median:.2f}x** HF's fp32 "
                 f"time, {100 * same_labels:.2f}% of pixels with densekit fp32's label.") if BF16 in infer_stats else ""
    statuses = compile_statuses(steps) if config.mode == "compile" else {}
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    infer_diffs = {n: [f"{diff:.1e}" if n == "densekit" else "-" if n == BF16 else "0",
                       f"{100 * same_labels:.2f}%" if n == BF16 else "-", *mode_cells.get(f"infer {n}", [])]
                   for n in infer_stats}
    infer_table = results_table(infer_stats, "HF transformers", infer_diffs,
                                [f"max abs diff of logits vs HF ({config.mode})", "pixels with densekit fp32's label",
                                 *mode_headers])
    train_table = results_table(train_stats, "HF transformers",
                                {n: [f"{peak[n] / 2**20:.0f}" if n in peak else "-", *mode_cells.get(f"train {n}", [])]
                                 for n in train_stats}, ["peak RSS above resident, MiB (own process)", *mode_headers])
    note = mode_note(config.mode, statuses)
    check_text = (f" Agreement with HF (max abs diff of logits <= {AGREEMENT_TOL:g}) is enforced in fp32 mode; "
                  "here the diff is reported.") if config.mode in ("channels_last", "compile") else ""
    note_text = f"\n\n{note}{check_text}" if note else ""
    ratio_i = infer_stats["densekit"].median / infer_stats["HF transformers"].median
    ratio_t = train_stats["densekit"].median / train_stats["HF transformers"].median
    markdown = f"""
What: densekit `EncoderDecoder` built from `configs/upernet_swin_t_ade.py` (BatchNorm, 150 classes, FCN
auxiliary head) against `transformers.UperNetForSemanticSegmentation` (Swin-T backbone, UPerHead 512
channels, auxiliary head), holding HF's random weights converted by `densekit.convert.hf_upernet`.
Inference = logits at the input size (densekit's `mode='tensor'` logits upsampled bilinearly, as HF's
`forward` does), under `torch.inference_mode()`. Training step = forward with the decode and 0.4 x
auxiliary cross-entropy losses, backward, `torch.optim.AdamW` step, on random labels; both models in
train mode (dropout on). Interleaved A/B rounds; median and min over {config.runs} rounds after
{config.warmup} warm-up round(s); ratio = median / HF's median (below 1 = faster).

Inference:

{infer_table}

Training step (batch {train_batch}: BatchNorm needs two images at the 1x1 pooling scale):

{train_table}

densekit / HF (median): inference **{ratio_i:.2f}x** ({_ms(infer_stats['densekit'].median)} ms vs
{_ms(infer_stats['HF transformers'].median)} ms), training step **{ratio_t:.2f}x**
({_ms(train_stats['densekit'].median)} ms vs {_ms(train_stats['HF transformers'].median)} ms){peak_text}.

Compute rate: densekit's forward is {flops / 1e9:.1f} GFLOP (`torch.utils.flop_counter`: matmuls and
convolutions, 2 per multiply-add), {achieved / 1e9:.1f} GFLOP/s at its median time = **{achieved / rate:.0%}** of
this machine's fp32 matmul rate measured in the same run
({rate / 1e9:.1f} GFLOP/s, 2048x2048 `a @ b`, median of 5).{bf16_text}{note_text}
"""
    return SuiteResult("upernet_swin_t", title, {**{f"infer {k}": v for k, v in infer_stats.items()},
                                                 **{f"train {k}": v for k, v in train_stats.items()}},
                       markdown, extra={"max_abs_diff": diff, "gflops": flops / 1e9, "gemm_gflops": rate / 1e9,
                                        "same_labels_bf16": same_labels, "peak_rss": peak,
                                        **({"compile": statuses} if statuses else {})})
