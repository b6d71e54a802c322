"""Benchmark suite ``swinv2_t_backbone``: densekit's Swin V2-T backbone against timm's ``swinv2_tiny_window8_256``
``forward_intermediates`` on identical weights.

The weights are a timm ``swinv2_tiny_window8_256`` (trained window 8 at 256) seeded with the suite's seed, read
into densekit by its own V2 loader (``load_pretrained_v2``, timm layout). Both sides run at the window the size
calls for (``bench_window``): window 8 up to 256, window 16 at 512 (the downstream setting: the window-8 file at
window 16, ``pretrained_window_size=8`` in densekit, ``pretrained_window_sizes=(8, 8, 8, 8)`` in timm), so the
position-bias MLP reads the same coordinates on both sides and the maps agree. Agreement is checked in fp32 at
the timing size, then every model is timed interleaved; densekit runs with ``densekit.accel`` and, on the CPU,
without it (``harness.with_accel_off``). Read top to bottom: window and models, the suite's text, the suite.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

import densekit
from densekit.backbones.pretrained import load_pretrained_v2
from densekit.inference.timing import Stats

from .harness import (
    ACCEL_OFF,
    ACCEL_WHAT,
    AGREEMENT_TOL,
    BenchConfig,
    SuiteResult,
    _ms,
    accel_ratio,
    check_agreement,
    diffs_against_timm,
    mode_column,
    mode_note,
    results_table,
    with_accel_off,
)
from .swin import _inputs, _timed

TIMM_SWINV2_T = "swinv2_tiny_window8_256"
TRAINED_WINDOW, TRAINED_SIDE, PATCH, STAGES = 8, 256, 4, 4
REFERENCE = "densekit (reference attn)"

# --------------------------------------------------------------------------- window and models


def bench_window(size: tuple[int, int]) -> int:
    """The window for ``size``: the trained window 8 scaled with the smaller side over 256 (8 at 256, 16 at 512),
    as Swin V2 fine-tunes at larger sizes; never below 8.

    Raises:
        ValueError: a size at which some stage side is neither a window multiple nor at most one window. There
            timm rolls a block's input before padding it while densekit (official Swin V2, HF) pads first, so
            the maps differ by design and the suite could not check them.
    """
    window = TRAINED_WINDOW * max(1, min(size) // TRAINED_SIDE)
    for side in size:
        for i in range(STAGES):
            stage = -(-side // (PATCH * 2**i))
            if stage % window and stage > window:
                raise ValueError(f"swinv2_t_backbone: at {size[0]}x{size[1]} stage {i} is {stage} tokens wide, "
                                 f"not a multiple of window {window}; use sides that are multiples of "
                                 f"{PATCH * 2 ** (STAGES - 1) * window} (e.g. 256 or 512)")
    return window


def _timm_swinv2_t(size: tuple[int, int], window: int) -> nn.Module:
    """timm's window-8/256 Swin V2-T built for ``size`` at ``window`` (the pretrained window 8 where it differs)."""
    if window == TRAINED_WINDOW:
        return timm.create_model(TIMM_SWINV2_T, pretrained=False, num_classes=0, img_size=size)
    return timm.create_model(TIMM_SWINV2_T, pretrained=False, num_classes=0, img_size=size, window_size=window,
                             pretrained_window_sizes=(TRAINED_WINDOW,) * STAGES)


def _load_timm(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Load the window-8 weights into a timm model of any window: the coordinate tables, indices and shift masks
    are timm's own buffers for its window (rebuilt, not loaded); every parameter must load."""
    buffers = ("relative_coords_table", "relative_position_index", "attn_mask")
    params = {k: v for k, v in weights.items() if not k.endswith(buffers)}
    missing, unexpected = model.load_state_dict(params, strict=False)
    if unexpected or [k for k in missing if not k.endswith(buffers)]:
        raise RuntimeError(f"timm Swin V2 did not take the weights: missing {missing}, unexpected {unexpected}")
    return model


def build_swinv2_t_models(size: tuple[int, int], device: str, seed: int = 0
                          ) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """densekit Swin V2-T (SDPA with ``densekit.accel``, on the CPU also without it, and reference attention) and
    timm's, with identical random weights, both at ``bench_window(size)``.

    Returns:
        densekit models ``{name: model}`` and timm ``{'timm': model}``.
    """
    window = bench_window(size)
    torch.manual_seed(seed)
    weights = timm.create_model(TIMM_SWINV2_T, pretrained=False, num_classes=0).state_dict()
    pretrained = 0 if window == TRAINED_WINDOW else TRAINED_WINDOW
    ours = {}
    for name, impl in (("densekit", "sdpa"), (REFERENCE, "reference")):
        model = densekit.create_backbone("swinv2_t", window_size=window, pretrained_window_size=pretrained,
                                         out_norm=False, attn_impl=impl)
        load_pretrained_v2(model, weights, verbose=False, progress=False, source=TIMM_SWINV2_T)
        model = model.eval().to(device)
        ours.update(with_accel_off(name, model, device) if name == "densekit" else {name: model})
    return ours, {"timm": _load_timm(_timm_swinv2_t(size, window), weights).eval().to(device)}


# --------------------------------------------------------------------------- the suite's text


def _table(config: BenchConfig, stats: dict[str, Stats], check_diffs: dict[str, float],
           run_diffs: dict[str, float], statuses: dict[str, str]) -> str:
    """The results table: timings, the fp32 diff (checked), the diff in the mode, compile's column."""
    h, w = config.size
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    headers = [f"max abs diff vs timm, fp32 @ {h}x{w} (checked <= {AGREEMENT_TOL:g})",
               f"max abs diff vs timm, {config.mode} @ {h}x{w}", *mode_headers]
    diffs = {n: [f"{check_diffs[n]:.1e}", f"{run_diffs[n]:.1e}", *mode_cells.get(n, [])] for n in stats}
    return results_table(stats, "timm", diffs, headers)


def _markdown(config: BenchConfig, window: int, table: str, stats: dict[str, Stats], statuses: dict[str, str]
              ) -> str:
    """The suite's text: what is compared, the protocol, the table, the ratios."""
    h, w = config.size
    dk, peer = stats["densekit"], stats["timm"]
    pretrained = "" if window == TRAINED_WINDOW else f", pretrained_window_size={TRAINED_WINDOW}"
    timm_window = "" if window == TRAINED_WINDOW else \
        f", window_size={window}, pretrained_window_sizes=({', '.join([str(TRAINED_WINDOW)] * STAGES)})"
    autocast = f", `torch.autocast('{config.device}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    accel_text = f"\n{ACCEL_WHAT}." if "densekit" + ACCEL_OFF in stats else ""
    accel_gain = f"; `densekit.accel` on / off: {accel_ratio(stats)}" if accel_text else ""
    note = mode_note(config.mode, statuses)
    return f"""
What: `densekit.create_backbone('swinv2_t', window_size={window}{pretrained}, out_norm=False)` (the four stage
maps, NCHW) against `timm.create_model('{TIMM_SWINV2_T}', pretrained=False, num_classes=0, img_size=({h}, {w})\
{timm_window})` `.forward_intermediates(x, intermediates_only=True)`, on identical random weights (timm's
window-8 state dict, read by densekit's V2 loader; timm rebuilds its coordinate tables for its window). Window
{window} at {h}x{w}: the window-8 weights run unresized, the position-bias MLP reading coordinates normalised by
the pretrained window on both sides. `timm` is timm's only V2 attention (matmul-softmax-matmul; it has no SDPA
path for cosine attention). `{REFERENCE}` is `attn_impl='reference'` (per-window matmuls, the official
arithmetic; no `densekit.accel`).{accel_text}

Protocol: one process, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs every implementation once; the order is
reversed every other round); median and min over the rounds; ratio = median / timm's median
(below 1 = faster than timm). Agreement is checked in fp32 at the timing size.

{table}

densekit / timm (median): **{dk.median / peer.median:.2f}x** ({_ms(dk.median)} ms vs {_ms(peer.median)} ms)\
{accel_gain}.
{f"{chr(10)}{note}{chr(10)}" if note else ""}"""


# --------------------------------------------------------------------------- the suite


def swinv2_t_backbone(config: BenchConfig) -> SuiteResult:
    """Swin V2-T backbone forward, densekit against timm ``forward_intermediates`` on identical weights."""
    h, w = config.size
    window = bench_window((h, w))
    ours, peers = build_swinv2_t_models((h, w), config.device, config.seed)
    x, _ = _inputs(config, (h, w))
    check_diffs = diffs_against_timm({**ours, **peers}, x, "fp32", config.device)
    check_agreement(check_diffs, f"Swin V2-T maps against timm's at {h}x{w}, window {window}")
    stats, run_diffs, statuses = _timed({**ours, **peers}, x, config)
    table = _table(config, stats, check_diffs, run_diffs, statuses)
    markdown = _markdown(config, window, table, stats, statuses)
    title = f"Swin V2-T backbone forward, {h}x{w}, window {window}, batch {config.batch}, {config.mode}, " \
            f"{config.device}"
    extra = {"window": window, "check_diffs": check_diffs, "run_diffs": run_diffs,
             **({"compile": statuses} if statuses else {})}
    return SuiteResult("swinv2_t_backbone", title, stats, markdown, extra=extra)
