"""Benchmark suite ``convnext_t_backbone``: densekit's ConvNeXt-T backbone against timm's ``convnext_tiny``.

densekit does not re-implement ConvNeXt: ``create_backbone('convnext_tiny')`` is timm's model inside a
``TimmBackbone`` (classifier pruned, input padded to a multiple of 32, maps cropped back to ``ceil(H / s)``).
This suite measures what that wrapper costs against timm's own ``forward_intermediates``, on identical
weights, agreement checked first. Also here: ``spread_layer_scales``, which the UPerNet-ConvNeXt suite uses
too. Listed in ``benchmarks.run.SUITES``.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

import densekit
from densekit.inference.timing import Stats, compare

from .harness import (
    AGREEMENT_TOL,
    BenchConfig,
    SuiteResult,
    _ms,
    backbone_cases,
    case_diffs_against_timm,
    check_agreement,
    compile_statuses,
    diffs_against_timm,
    mode_column,
    mode_note,
    results_table,
)

TIMM_CONVNEXT_T = "convnext_tiny"
# The largest stride: at multiples of it timm's strided convs floor nothing and densekit pads nothing.
CONVNEXT_STRIDE = 32
# Layer-scale parameters: timm's ConvNeXt block (``gamma``) and HF's ConvNextLayer (``layer_scale_parameter``).
LAYER_SCALE_NAMES = ("gamma", "layer_scale_parameter")


def spread_layer_scales(model: nn.Module, seed: int = 0) -> int:
    """Set every ConvNeXt layer scale in ``model`` to values drawn from U(0.5, 1) (seeded), in place.

    timm and HF both initialise them to 1e-6, which scales every block's residual branch far below the
    agreement tolerance: a block holding wrong weights would pass the check. Spread out, every block counts.
    Returns how many parameters were set (0 means ``model`` has no ConvNeXt blocks).
    """
    gen = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rsplit(".", 1)[-1] in LAYER_SCALE_NAMES:
                param.copy_(0.5 + 0.5 * torch.rand(param.shape, generator=gen))
                count += 1
    return count


def timm_convnext_to_densekit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt state dict -> a ``TimmBackbone(out_norm=False)`` state dict: every key under ``model.``;
    ``head.*`` (the classifier norm, which ``TimmBackbone`` prunes) dropped."""
    return {f"model.{key}": value for key, value in state_dict.items() if not key.startswith("head.")}


def build_convnext_t_models(device: str, seed: int = 0) -> dict[str, nn.Module]:
    """``{'densekit': create_backbone('convnext_tiny'), 'timm': timm convnext_tiny}`` in eval mode on ``device``,
    holding identical random weights: timm's init seeded with ``seed``, layer scales spread
    (``spread_layer_scales``), copied into densekit with ``timm_convnext_to_densekit`` (strict)."""
    torch.manual_seed(seed)
    peer = timm.create_model(TIMM_CONVNEXT_T, pretrained=False, num_classes=0)
    spread_layer_scales(peer, seed)
    ours = densekit.create_backbone(TIMM_CONVNEXT_T, out_norm=False, drop_path_rate=0.0)
    ours.load_state_dict(timm_convnext_to_densekit(peer.state_dict()), strict=True)
    return {"densekit": ours.eval().to(device), "timm": peer.eval().to(device)}


def _check_size(height: int, width: int) -> None:
    if height % CONVNEXT_STRIDE or width % CONVNEXT_STRIDE:
        raise ValueError(
            f"convnext_t_backbone needs sides that are multiples of {CONVNEXT_STRIDE}, got {height}x{width}: "
            f"elsewhere timm's strided convs floor the map sizes while densekit pads and returns ceil(H / s), "
            f"so the two return maps of different sizes and cannot be checked against each other")


def _table(config: BenchConfig, stats: dict[str, Stats], check_diffs: dict[str, float],
           run_diffs: dict[str, float], statuses: dict[str, str]) -> str:
    """The results table: timings, the fp32 diff (checked), the diff in the mode (other modes), compile's column."""
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    headers = [f"max abs diff vs timm, fp32 (checked <= {AGREEMENT_TOL:g})"]
    diffs = {n: [f"{check_diffs[n]:.1e}"] for n in stats}
    if config.mode != "fp32":
        headers.append(f"max abs diff vs timm, {config.mode}")
        diffs = {n: [*diffs[n], f"{run_diffs[n]:.1e}"] for n in stats}
    return results_table(stats, "timm", {n: [*d, *mode_cells.get(n, [])] for n, d in diffs.items()},
                         headers + mode_headers)


def _markdown(config: BenchConfig, table: str, stats: dict[str, Stats], statuses: dict[str, str]) -> str:
    """The suite's text: what is compared, the protocol, the table, the ratio, the mode's note."""
    ours, peer = stats["densekit"], stats["timm"]
    autocast = f", `torch.autocast('{config.device}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    note = mode_note(config.mode, statuses)
    note = f"\n{note}\n" if note else ""
    return f"""
What: `densekit.create_backbone('{TIMM_CONVNEXT_T}', out_norm=False)` (a `TimmBackbone`: timm's model with
its classifier pruned, the input padded to a multiple of 32 and the four stage maps cropped back, NCHW)
against `timm.create_model('{TIMM_CONVNEXT_T}', pretrained=False, num_classes=0)`
`.forward_intermediates(x, intermediates_only=True)`. Identical weights: timm's random init (seed
{config.seed}) with every layer scale (`gamma`) set to U(0.5, 1), since timm's 1e-6 would leave every
block's contribution below the agreement tolerance; copied into densekit under `model.`, `head.*`
dropped, loaded strictly. Drop path 0, eval mode. Agreement of the four maps is checked in fp32 at
{config.size[0]}x{config.size[1]} before timing.

Protocol: one process, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs both implementations; the order is reversed
every other round); median and min over the rounds; ratio = median / timm's median (below 1 = faster
than timm).

{table}

densekit / timm (median): **{ours.median / peer.median:.2f}x** ({_ms(ours.median)} ms vs {_ms(peer.median)} ms).
{note}"""


def convnext_t_backbone(config: BenchConfig) -> SuiteResult:
    """ConvNeXt-T backbone forward, densekit against timm ``forward_intermediates`` on identical weights."""
    h, w = config.size
    _check_size(h, w)
    dev = config.device
    models = build_convnext_t_models(dev, config.seed)
    x = torch.randn(config.batch, 3, h, w, generator=torch.Generator().manual_seed(config.seed)).to(dev)

    check_diffs = diffs_against_timm(models, x, "fp32", dev)  # on the models as built, before the mode
    check_agreement(check_diffs, f"ConvNeXt-T maps against timm's at {h}x{w}")
    cases, steps = backbone_cases(models, x, config)
    # In compile mode, these first calls compile (before the timed rounds).
    run_diffs = check_diffs if config.mode == "fp32" else case_diffs_against_timm(cases)
    stats = compare(cases, config.warmup, config.runs, dev)

    statuses = compile_statuses(steps) if config.mode == "compile" else {}
    markdown = _markdown(config, _table(config, stats, check_diffs, run_diffs, statuses), stats, statuses)
    title = f"ConvNeXt-T backbone forward, {h}x{w}, batch {config.batch}, {config.mode}, {dev}"
    extra = {"check_diffs": check_diffs, "run_diffs": run_diffs, **({"compile": statuses} if statuses else {})}
    return SuiteResult("convnext_t_backbone", title, stats, markdown, extra=extra)
