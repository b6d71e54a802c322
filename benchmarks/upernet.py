"""Benchmark suites ``upernet_swin_t`` and ``upernet_convnext_t``: UPerNet against HuggingFace
``UperNetForSemanticSegmentation``, with a Swin-T or a ConvNeXt-T backbone.

Per suite, both models hold identical random weights (HF's, converted with ``convert_hf_upernet``); agreement
of the upsampled logits is checked in fp32 before timing. Timed: inference (logits at the input size) and one
training step (forward with loss, backward, AdamW step) per model, interleaved A/B in one process. The two
suites share every step; ``UPERNETS`` holds what differs (densekit's config, HF's backbone config). On the CPU
densekit runs with ``densekit.accel`` and, in an "accel off" row of every densekit case (inference fp32 and bf16,
training step), without it (``harness.with_accel_off``). Listed in ``benchmarks.run.SUITES``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from torch import nn

from densekit.convert.hf import convert_hf_upernet
from densekit.inference.timing import Stats, compare
from densekit.models import EncoderDecoder
from densekit.structures import SegDataSample

from .convnext import spread_layer_scales
from .harness import (
    ACCEL_OFF,
    ACCEL_WHAT,
    AGREEMENT_TOL,
    BenchConfig,
    SuiteResult,
    _ms,
    accel_ratio,
    check_agreement,
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
    results_table,
    with_accel_off,
)
from .mfu import (
    GpuRates,
    Throughput,
    images_per_s_text,
    measure_gpu,
    throughputs,
    utilisation_extra,
    utilisation_markdown,
)

ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 150
BF16 = "densekit bf16 autocast"
OFF, BF16_OFF = "densekit" + ACCEL_OFF, BF16 + ACCEL_OFF
HF = "HF transformers"
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def _hf_swin_t() -> Any:
    import transformers

    return transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                   drop_path_rate=0.0, out_features=STAGES)


def _hf_convnext_t() -> Any:
    import transformers

    return transformers.ConvNextConfig(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], drop_path_rate=0.0,
                                       out_features=STAGES)


@dataclass(frozen=True)
class UperNetPair:
    """What one UPerNet suite compares: densekit's config and HF's backbone, and how they are described.

    ``spread_layer_scales``: set HF's ConvNeXt layer scales (1e-6 at init) to U(0.5, 1) before converting, so
    that every block counts in the agreement check (see ``bench_convnext.spread_layer_scales``).
    ``windowed``: the backbone attends in windows over a padded grid (Swin), which the compute-rate text explains.
    """

    title: str
    config: str  # densekit config, relative to the repository root
    hf_backbone: Callable[[], Any]  # () -> transformers backbone config
    densekit_text: str  # densekit's backbone in the suite's markdown
    hf_text: str  # HF's backbone in the suite's markdown
    spread_layer_scales: bool = False
    windowed: bool = False


UPERNETS: dict[str, UperNetPair] = {
    "swin_t": UperNetPair("UPerNet-Swin-T", "configs/upernet_swin_t_ade.py", _hf_swin_t,
                          "densekit's Swin-T", "Swin-T backbone", windowed=True),
    "convnext_t": UperNetPair(
        "UPerNet-ConvNeXt-T", "configs/upernet_convnext_t_ade.py", _hf_convnext_t,
        "timm's `convnext_tiny` with `out_norm=True`, HF's per-stage LayerNorms",
        "`ConvNextConfig` backbone: depths 3-3-9-3, hidden sizes 96-192-384-768", spread_layer_scales=True),
}


def build_upernet_pair(seed: int = 0, backbone: str = "swin_t") -> tuple[nn.Module, nn.Module]:
    """(densekit EncoderDecoder, HF UperNetForSemanticSegmentation), same weights, BatchNorm, drop path 0.

    Args:
        seed: seeds HF's random init (and the layer-scale spread), which densekit receives converted.
        backbone: a key of ``UPERNETS`` (``'swin_t'``, ``'convnext_t'``).
    """
    import transformers  # the peer: imported where it is used, so the other suites run without it

    if backbone not in UPERNETS:
        raise KeyError(f"unknown UPerNet backbone {backbone!r}; known: {', '.join(UPERNETS)}")
    pair = UPERNETS[backbone]
    hf_config = transformers.UperNetConfig(backbone_config=pair.hf_backbone(), num_labels=NUM_CLASSES,
                                           hidden_size=512, auxiliary_in_channels=384, use_auxiliary_head=True)
    torch.manual_seed(seed)
    hf = transformers.UperNetForSemanticSegmentation(hf_config)
    if pair.spread_layer_scales and not spread_layer_scales(hf, seed):
        raise RuntimeError(f"no layer scales found in HF's {pair.title}")
    cfg = copy.deepcopy(Config.fromfile(str(ROOT / pair.config)).model.to_dict())
    cfg.pop("type")
    cfg["backbone"].update(drop_path_rate=0.0, pretrained=None)
    for head in ("decode_head", "auxiliary_head"):
        cfg[head].update(norm="BN", num_classes=NUM_CLASSES)
    ours = EncoderDecoder(**cfg)
    converted, unmapped = convert_hf_upernet(hf.state_dict())
    ours.load_state_dict(converted, strict=True)
    return ours, hf


def _inference(ours: dict[str, nn.Module], hf: nn.Module, x: torch.Tensor
               ) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """One inference per model: each densekit model's (``{name: model}``) and HF's, logits at the input size."""

    def densekit(model: nn.Module) -> Callable[[], list[torch.Tensor]]:
        def run() -> list[torch.Tensor]:
            logits = model(x, mode="tensor")
            return [F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)]

        return run

    return {**{name: densekit(model) for name, model in ours.items()}, HF: lambda: [hf(pixel_values=x).logits]}


def checked_logits(ours: nn.Module, hf: nn.Module, x: torch.Tensor, what: str, device: str = "cpu"
                   ) -> tuple[float, torch.Tensor]:
    """Both models' fp32 logits of ``x`` ``(B, 3, H, W)`` at the input size, checked to agree.

    Returns:
        (max abs difference, densekit's logits ``(B, 150, H, W)``); AssertionError naming ``what`` where the
        difference exceeds ``AGREEMENT_TOL``.
    """
    forwards = {n: inference_case(f, "fp32", device) for n, f in _inference({"densekit": ours}, hf, x).items()}
    logits = forwards["densekit"]()
    diff = max_abs_diff(logits, forwards[HF]())
    check_agreement({"densekit": diff}, what)
    return diff, logits[0]


def _train_steps(ours: dict[str, nn.Module], hf: nn.Module, x: torch.Tensor, labels: torch.Tensor
                 ) -> dict[str, Callable[[], None]]:
    """One AdamW step each: every densekit model's decode + 0.4 aux cross-entropy, HF's (the same losses)."""
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels]

    def densekit(model: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)

        def step() -> None:
            losses = model(x, samples, mode="loss")
            sum(v for k, v in losses.items() if "loss" in k).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    opt_hf = torch.optim.AdamW(hf.parameters(), lr=6e-5, weight_decay=0.01)

    def huggingface() -> None:
        hf(pixel_values=x, labels=labels).loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    return {**{name: densekit(model) for name, model in ours.items()}, HF: huggingface}


def train_step(impl: str, height: int, width: int, batch: int = 2, seed: int = 0, backbone: str = "swin_t"
               ) -> Callable[[], None]:
    """One training step of ``impl`` (``'densekit'``, ``'densekit (accel off)'`` or ``'HF transformers'``) alone,
    for measuring its peak memory in a process of its own (``peak_rss_above_resident``)."""
    ours, hf = build_upernet_pair(seed, backbone)
    models = with_accel_off("densekit", ours.train(), "cpu")
    hf.train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, height, width, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (batch, height, width), generator=gen)
    # The other models stay resident (weights only: AdamW makes its state at the first step), which the
    # measurement subtracts.
    return _train_steps(models, hf, x, labels)[impl]


@dataclass
class _Inference:
    stats: dict[str, Stats]
    diff: float  # max abs diff of the logits in the suite's mode
    same_labels: float | None  # share of pixels where bf16 autocast keeps densekit fp32's label (fp32 runs)
    flops: int  # the model's forward FLOPs, counted on HF's implementation (what mmseg and HF publish)
    executed_flops: int  # what densekit's forward executes (less: no projections of padded tokens, Winograd convs)
    gemm_rate: float  # the machine's fp32 matmul FLOP/s
    steps: dict[str, Callable[[], Any]]  # 'infer <impl>': the timed step as the mode runs it (prepare_step)
    off: dict[str, float] = field(default_factory=dict)  # the accel-off rows' 'diff' and 'same_labels' (CPU)


def _checked_models(ours: dict[str, nn.Module], hf: nn.Module, x: torch.Tensor, title: str, device: str
                    ) -> tuple[dict[str, float], torch.Tensor]:
    """fp32 agreement with HF of every densekit model as built (``checked_logits``). Returns ({name: diff},
    the first model's logits)."""
    what = f"{title} logits against HF's at {x.shape[-2]}x{x.shape[-1]}"
    checked = {name: checked_logits(model, hf, x, what + ("" if name == "densekit" else f" ({name})"), device)
               for name, model in ours.items()}
    return {name: diff for name, (diff, _) in checked.items()}, checked["densekit"][1]


def _bf16_cases(forwards: dict[str, Callable[[], list[torch.Tensor]]], fp32_logits: torch.Tensor, device: str
                ) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """fp32 runs: each densekit forward under bf16 autocast (``BF16``, ``BF16_OFF``), and the share of pixels
    where it keeps densekit fp32's label."""
    names = {"densekit": BF16, OFF: BF16_OFF}
    cases = {names[n]: inference_case(f, "bf16", device) for n, f in forwards.items() if n in names}
    same = {n: float((case()[0].argmax(1) == fp32_logits.argmax(1)).float().mean()) for n, case in cases.items()}
    return cases, same


def _time_inference(ours: dict[str, nn.Module], hf: nn.Module, config: BenchConfig, title: str) -> _Inference:
    """Check fp32 agreement on the models as built, then apply the mode (``prepare_model``, ``prepare_input``,
    ``prepare_step``) and time every forward (plus densekit under bf16 autocast in fp32 runs)."""
    dev = config.device
    ours, hf = {n: m.to(dev).eval() for n, m in ours.items()}, hf.to(dev).eval()
    x = torch.randn(config.batch, 3, *config.size, generator=torch.Generator().manual_seed(config.seed)).to(dev)
    diffs, ours_logits = _checked_models(ours, hf, x, title, dev)
    ours, hf = {n: prepare_model(m, config.mode) for n, m in ours.items()}, prepare_model(hf, config.mode)
    forwards = _inference(ours, hf, prepare_input(x, config.mode))
    steps = {f"infer {n}": prepare_step(f, config.mode, f"infer {n}") for n, f in forwards.items()}
    infer = {n: inference_case(steps[f"infer {n}"], config.mode, dev) for n in forwards}
    same_labels: dict[str, float] = {}
    if config.mode == "fp32":  # bf16 autocast against HF's fp32 time, and against densekit's fp32 labels
        bf16, same_labels = _bf16_cases(forwards, ours_logits, dev)
        infer.update(bf16)
    else:  # in compile mode, these first calls compile (before the timed rounds)
        reference = infer[HF]()
        diffs = {n: max_abs_diff(infer[n](), reference) for n in ours}
    stats = compare(infer, config.warmup, config.runs, dev)
    with torch.inference_mode():
        flops, executed = model_flops(forwards[HF]), model_flops(forwards["densekit"])
    off = {k: v for k, v in (("diff", diffs.get(OFF)), ("same_labels", same_labels.get(BF16_OFF))) if v is not None}
    return _Inference(stats, diffs["densekit"], same_labels.get(BF16), flops, executed, gemm_rate(device=dev), steps,
                      off)


def _time_training(ours: dict[str, nn.Module], hf: nn.Module, config: BenchConfig, backbone: str, train_batch: int
                   ) -> tuple[dict[str, Stats], dict[str, int], dict[str, Callable[[], Any]]]:
    """Time one training step of each model interleaved, in the mode (models already prepared by
    ``_time_inference``); then, on CPU in fp32 with ``config.peak_rss``, each step's peak RSS in a process of its
    own. Returns (stats, peak bytes by implementation, ``{'train <impl>': step as the mode runs it}``)."""
    h, w = config.size
    dev = config.device
    for model in (*ours.values(), hf):
        model.train()
    gen = torch.Generator().manual_seed(config.seed)  # the inputs train_step draws
    xt = prepare_input(torch.randn(train_batch, 3, h, w, generator=gen).to(dev), config.mode)
    labels = torch.randint(0, NUM_CLASSES, (train_batch, h, w), generator=gen).to(dev)
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=config.mode == "bf16")

    def with_autocast(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with autocast:
                fn()

        return run

    train_steps = _train_steps(ours, hf, xt, labels)
    steps = {f"train {n}": prepare_step(f, config.mode, f"train {n}") for n, f in train_steps.items()}
    train = {n: with_autocast(steps[f"train {n}"]) for n in train_steps}
    # At least one warm-up round: AdamW makes its state at the first step (and compile mode compiles there).
    stats = compare(train, max(1, config.warmup), config.runs, dev)
    peak = {}
    if dev == "cpu" and config.peak_rss and config.mode == "fp32":
        for name in train:
            peak[name] = peak_rss_above_resident(__name__, "train_step", dict(
                impl=name, height=h, width=w, batch=train_batch, seed=config.seed, backbone=backbone))
    return stats, peak, steps


def _mode_text(mode: str, statuses: dict[str, str]) -> str:
    """The paragraph ``channels_last`` and ``compile`` add (``mode_note``, and where agreement is enforced); empty
    for ``fp32`` and ``bf16``, whose text reads as it always has."""
    note = mode_note(mode, statuses)
    return (f"\n\n{note} Agreement with HF (max abs diff of logits <= {AGREEMENT_TOL:g}) is enforced in fp32 mode, "
            "on the models as built, before the mode is applied; the table reports the diff in this mode."
            ) if note else ""


def _images_per_s(config: BenchConfig, inf: _Inference, train: dict[str, Stats], train_batch: int
                  ) -> dict[str, float]:
    """``{'infer <impl>' | 'train <impl>': images/s}``: the images of one call over the case's median time."""
    return {**{f"infer {n}": config.batch / s.median for n, s in inf.stats.items()},
            **{f"train {n}": train_batch / s.median for n, s in train.items()}}


def _infer_cells(name: str, inf: _Inference) -> list[str]:
    """An inference row's diff of logits against HF and share of pixels with densekit fp32's label."""
    diffs = {"densekit": inf.diff, OFF: inf.off.get("diff"), HF: 0.0}
    labels = {BF16: inf.same_labels, BF16_OFF: inf.off.get("same_labels")}
    diff = "0" if name == HF else f"{diffs[name]:.1e}" if diffs.get(name) is not None else "-"
    return [diff, f"{100 * labels[name]:.2f}%" if labels.get(name) is not None else "-"]


def _tables(config: BenchConfig, inf: _Inference, train: dict[str, Stats], peak: dict[str, int], train_batch: int,
            statuses: dict[str, str]) -> tuple[str, str]:
    """The inference and training tables: timings, images/s, diffs or peak RSS, ``compile`` mode's column."""
    istats = inf.stats
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    rate = {case: images_per_s_text(r) for case, r in _images_per_s(config, inf, train, train_batch).items()}
    infer_diffs = {n: [rate[f"infer {n}"], *_infer_cells(n, inf), *mode_cells.get(f"infer {n}", [])] for n in istats}
    infer_table = results_table(istats, HF, infer_diffs, ["images/s", f"max abs diff of logits vs HF ({config.mode})",
                                                          "pixels with densekit fp32's label", *mode_headers])
    train_table = results_table(train, HF, {n: [rate[f"train {n}"], f"{peak[n] / 2**20:.0f}" if n in peak else "-",
                                                *mode_cells.get(f"train {n}", [])] for n in train},
                                ["images/s", "peak RSS above resident, MiB (own process)", *mode_headers])
    return infer_table, train_table


def _gpu_cases(config: BenchConfig, inf: _Inference, train: dict[str, Stats], train_batch: int) -> list[Throughput]:
    """Every timed case as an ``mfu.Throughput``, credited the model's forward FLOPs per image (training: 3x)."""
    return throughputs(inf.stats, train, config.batch, train_batch, inf.flops / config.batch)


def _gpu_text(config: BenchConfig, inf: _Inference, train: dict[str, Stats], train_batch: int,
              gpu: GpuRates | None) -> str:
    """The GPU utilisation paragraph and table (``mfu.utilisation_markdown``), after a blank line; empty without
    ``gpu`` (off CUDA)."""
    if gpu is None:
        return ""
    counted = (f"the model's forward above over the batch of {config.batch}, "
               f"{inf.flops / config.batch / 1e9:.1f} GFLOP "
               "(backbone and decode head; the FCN auxiliary head that only training runs is not counted)")
    cases = _gpu_cases(config, inf, train, train_batch)
    return "\n\n" + utilisation_markdown(cases, gpu, config.mode, counted).strip()


def _what(pair: UperNetPair, config: BenchConfig, accel_rows: bool) -> str:
    """The paragraph saying what is compared and how."""
    weights_text = (" HF initialises ConvNeXt's layer scales to 1e-6, which would leave every block's contribution "
                    "below the agreement tolerance, so they are set to U(0.5, 1) (seeded) before conversion."
                    ) if pair.spread_layer_scales else ""
    accel_text = (f" {ACCEL_WHAT} (every densekit row has its accel-off row, the models checked against HF alike)."
                  ) if accel_rows else ""
    return f"""What: densekit `EncoderDecoder` built from `{pair.config}` ({pair.densekit_text}; BatchNorm, 150 classes,
FCN auxiliary head, drop path 0) against `transformers.UperNetForSemanticSegmentation` ({pair.hf_text}, drop
path 0; UPerHead 512 channels, auxiliary head), holding HF's random weights (seed {config.seed}) converted by
`densekit.convert.hf`.{weights_text} The upsampled logits are checked to agree within {AGREEMENT_TOL:g}
in fp32 before timing. Inference = logits at the input size (densekit's `mode='tensor'` logits upsampled
bilinearly, as HF's `forward` does), under `torch.inference_mode()`. Training step = forward with the decode
and 0.4 x auxiliary cross-entropy losses, backward, `torch.optim.AdamW` step, on random labels; both models
in train mode (dropout on). Interleaved A/B rounds; median and min over {config.runs} rounds after
{config.warmup} warm-up round(s); ratio = median / HF's median (below 1 = faster).{accel_text}"""


def _ratios(config: BenchConfig, inf: _Inference, train: dict[str, Stats], peak: dict[str, int]) -> str:
    """densekit against HF at the medians (inference, training, peak memory), and the accel switch's gains."""
    istats = inf.stats
    peak_ratio = peak["densekit"] / peak[HF] if "densekit" in peak and HF in peak else None
    peak_text = (f", peak memory of a training step **{peak_ratio:.2f}x** HF's (each measured in a process of its "
                 "own: `VmHWM` after resetting it, minus the resident set before the step; those processes run "
                 "after the timed rounds, and the machine table counts them as other processes' CPU use)"
                 ) if peak_ratio else ""
    accel_text = "".join(f"\n`densekit.accel` on / off (median), {what}: {ratio}." for what, ratio in (
        ("inference", accel_ratio(istats)), ("inference bf16", accel_ratio(istats, BF16)),
        ("training step", accel_ratio(train))) if ratio)
    return f"""densekit / HF (median): inference **{istats['densekit'].median / istats[HF].median:.2f}x** \
({_ms(istats['densekit'].median)} ms vs
{_ms(istats[HF].median)} ms), training step **{train['densekit'].median / train[HF].median:.2f}x**
({_ms(train['densekit'].median)} ms vs {_ms(train[HF].median)} ms){peak_text}.{accel_text}"""


def _compute_rate(pair: UperNetPair, inf: _Inference) -> str:
    """The model's FLOPs against the machine's matmul rate, and what densekit executes."""
    achieved = inf.flops / inf.stats["densekit"].median
    published, skipped = ("; HF, mmsegmentation and official Swin all compute the padded window tokens, so this is "
                          "the published count", "it skips the projections of padded tokens, work the others do and "
                          "discard, and ") if pair.windowed else ("", "")
    return f"""Compute rate: the model's forward is {inf.flops / 1e9:.1f} GFLOP (`torch.utils.flop_counter` on HF's \
forward:
matmuls, convolutions and attention, 2 per multiply-add{published}), {achieved / 1e9:.1f} GFLOP/s at densekit's \
median time =
**{achieved / inf.gemm_rate:.0%}** of this machine's fp32 matmul rate measured in the same run
({inf.gemm_rate / 1e9:.1f} GFLOP/s, 2048x2048 `a @ b`, median of 5). densekit itself executes
{inf.executed_flops / 1e9:.1f} GFLOP: {skipped}on the CPU in fp32 it runs its widest 3x3 convolutions by
Winograd F(2x2, 3x3) (`densekit/accel/winograd.py`, 2.25x fewer multiplies)."""


def _markdown(pair: UperNetPair, config: BenchConfig, inf: _Inference, train: dict[str, Stats],
              peak: dict[str, int], train_batch: int, statuses: dict[str, str], gpu: GpuRates | None = None) -> str:
    """The suite's text: what is compared, how, the inference and training tables (with images/s and
    ``compile`` mode's column from ``statuses``), ratios, compute rate, the mode's note and, with ``gpu`` (CUDA
    runs), the GPU utilisation table."""
    istats = inf.stats
    bf16_text = (f" `{BF16}` is densekit under `torch.autocast('{config.device}', dtype=torch.bfloat16)` timed in "
                 f"the same rounds: **{istats[BF16].median / istats[HF].median:.2f}x** HF's fp32 time, "
                 f"{100 * inf.same_labels:.2f}% of pixels with densekit fp32's label.") if BF16 in istats else ""
    infer_table, train_table = _tables(config, inf, train, peak, train_batch, statuses)
    return f"""
{_what(pair, config, OFF in istats)}

Inference:

{infer_table}

Training step (batch {train_batch}: BatchNorm needs two images at the 1x1 pooling scale):

{train_table}

{_ratios(config, inf, train, peak)}

{_compute_rate(pair, inf)}\
{bf16_text}{_mode_text(config.mode, statuses)}\
{_gpu_text(config, inf, train, train_batch, gpu)}
"""


def upernet_suite(name: str, backbone: str, config: BenchConfig) -> SuiteResult:
    """UPerNet (``UPERNETS[backbone]``) inference and training step, densekit (on the CPU with and without
    ``densekit.accel``) against HF on identical weights, in ``config.mode`` (applied to every model alike;
    agreement enforced in fp32 first)."""
    pair = UPERNETS[backbone]
    model, hf = build_upernet_pair(config.seed, backbone)
    ours = with_accel_off("densekit", model, config.device)
    inf = _time_inference(ours, hf, config, pair.title)
    # BatchNorm cannot train on one image at the 1x1 pyramid-pooling scale (HF's and mmseg's alike).
    train_batch = max(2, config.batch)
    train, peak, train_steps = _time_training(ours, hf, config, backbone, train_batch)
    statuses = compile_statuses({**inf.steps, **train_steps}) if config.mode == "compile" else {}
    gpu = measure_gpu(config.peak_tflops) if config.device == "cuda" else None  # after the timed rounds
    h, w = config.size
    title = f"{pair.title}, {h}x{w}, batch {config.batch}, {config.mode}, {config.device}"
    stats = {**{f"infer {k}": v for k, v in inf.stats.items()}, **{f"train {k}": v for k, v in train.items()}}
    images = _images_per_s(config, inf, train, train_batch)
    return SuiteResult(name, title, stats, _markdown(pair, config, inf, train, peak, train_batch, statuses, gpu),
                       extra={"max_abs_diff": inf.diff, "gflops": inf.flops / 1e9,
                              "executed_gflops": inf.executed_flops / 1e9, "gemm_gflops": inf.gemm_rate / 1e9,
                              "same_labels_bf16": inf.same_labels, "peak_rss": peak, "images_per_s": images,
                              **({"gpu": utilisation_extra(_gpu_cases(config, inf, train, train_batch), gpu)}
                                 if gpu else {}),
                              **({"compile": statuses} if statuses else {})})


def upernet_swin_t(config: BenchConfig) -> SuiteResult:
    """UPerNet-Swin-T inference and training step, densekit against HF transformers on identical weights."""
    return upernet_suite("upernet_swin_t", "swin_t", config)


def upernet_convnext_t(config: BenchConfig) -> SuiteResult:
    """UPerNet-ConvNeXt-T inference and training step, densekit against HF transformers on identical weights."""
    return upernet_suite("upernet_convnext_t", "convnext_t", config)
