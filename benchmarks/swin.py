"""Benchmark suite ``swin_t_backbone``: densekit's Swin-T backbone against timm's Swin-T ``forward_intermediates``
on identical weights.

timm's weights are copied into densekit (``timm_swin_to_densekit``); agreement of the four stage maps is checked in
fp32 at a size where timm and official Swin compute the same thing (``swin_agreement_size``), then every model is
timed at the asked size, interleaved. densekit runs with ``densekit.accel`` and, on the CPU, without it
(``harness.with_accel_off``); timm is built for the input size and, timed beside it, at 224 with
``strict_img_size=False`` (``TIMM_DYNAMIC``). Read top to bottom: weights and sizes, the models, the suite's
steps, its text, the suite.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import timm
import torch
from timm.models.swin_transformer import WindowAttention as TimmWindowAttention
from torch import nn

import densekit
from densekit.inference.timing import Stats, compare
from densekit.layers.rel_pos_bias import crop_bias_table, table_window

from .harness import (
    ACCEL_OFF,
    ACCEL_WHAT,
    AGREEMENT_TOL,
    BenchConfig,
    SuiteResult,
    _ms,
    accel_ratio,
    backbone_cases,
    case_diffs_against_timm,
    check_agreement,
    compile_statuses,
    diffs_against_timm,
    mode_column,
    mode_note,
    results_table,
    with_accel_off,
)

_TIMM_SWIN_T = "swin_tiny_patch4_window7_224"
_SWIN_WINDOW, _SWIN_PATCH, _SWIN_STAGES = 7, 4, 4
REFERENCE = "densekit (reference attn)"

# --------------------------------------------------------------------------- weights, sizes and models


def timm_swin_to_densekit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm Swin state dict -> densekit ``SwinTransformer(out_norm=False)`` layout.

    ``layers.i`` -> ``stages.i``; timm's ``layers.i.downsample`` (start of stage i) ->
    ``stages.{i-1}.downsample`` (end of the previous stage); ``head.*`` and ``norm.*`` dropped.
    Both use the [x0, x1, x2, x3] merging order, so no channel permutation is needed.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("head.", "norm.")):
            continue
        match = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
        if match:
            out[f"stages.{int(match[1]) - 1}.downsample.{match[2]}"] = value
        elif key.startswith("layers."):
            out["stages." + key[len("layers."):]] = value
        else:
            out[key] = value
    return out


def swin_agreement_size(side: int) -> int:
    """A side at which timm's Swin and official Swin compute the same thing, near ``side``.

    timm rolls (shifts) a block's input *before* padding it to window multiples; official Swin,
    mmsegmentation, HuggingFace and densekit pad first, then roll. Where a stage's side is neither
    a window multiple nor at most one window, the two place the padding differently and their
    outputs differ by design. Returns ``side`` if every stage is safe, else the nearest multiple
    of ``patch * window * 2**3`` (224 for Swin-T), at least one.
    """
    sides = [-(-side // (_SWIN_PATCH * 2**i)) for i in range(_SWIN_STAGES)]
    if all(s % _SWIN_WINDOW == 0 or s <= _SWIN_WINDOW for s in sides):
        return side
    unit = _SWIN_PATCH * _SWIN_WINDOW * 2 ** (_SWIN_STAGES - 1)
    return max(unit, round(side / unit) * unit)


def _timm_swin_t(img_size: tuple[int, int] = (224, 224)) -> nn.Module:
    return timm.create_model(_TIMM_SWIN_T, pretrained=False, num_classes=0, img_size=img_size)


# timm built at its default 224 with ``strict_img_size=False``, timed at other sizes: see build_swin_t_models.
TIMM_DYNAMIC = "timm (strict_img_size=False)"


def _load_timm_swin(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Load window-7 timm weights into a timm Swin built for a size where some stage is smaller
    than the window (timm then shrinks that stage's window and table): crop the tables to their
    central offsets, as densekit does at run time, so both models use the same biases."""
    own = model.state_dict()
    weights = {k: crop_bias_table(v, table_window(own[k])) if k.endswith("relative_position_bias_table")
               and v.shape != own[k].shape else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True)
    return model


def _with_fused_attn(model: nn.Module) -> nn.Module:
    """A copy of a timm Swin with SDPA window attention (timm's ``fused_attn``, experimental there)."""
    fused = copy.deepcopy(model)
    for module in fused.modules():
        if isinstance(module, TimmWindowAttention):
            module.fused_attn = True
    return fused


def build_swin_t_models(sizes: Sequence[tuple[int, int]], device: str, seed: int = 0,
                        dynamic_size: tuple[int, int] | None = None
                        ) -> tuple[dict[str, nn.Module], dict[tuple[int, int], dict[str, nn.Module]]]:
    """densekit Swin-T (SDPA with ``densekit.accel``, on the CPU also without it, and reference attention) and timm
    Swin-T with identical random weights.

    The weights are those of a timm Swin-T at 224 (window 7 in every stage) seeded with ``seed``.
    densekit takes any size, so its models serve every size. timm is built per size with
    ``img_size=size``: at a fixed size it precomputes its shift masks and picks window and shift
    per stage for that size, as densekit does (and caches). Built at 224 with ``strict_img_size=False``
    instead (``TIMM_DYNAMIC``, added for ``dynamic_size`` when that is not 224), it rebuilds the masks
    every forward and keeps the windows and shifts of the 224 build, dropping the shift of stage 3 at
    512x512 - a different model, timed but not held to agree.

    Returns:
        densekit models ``{name: model}`` and, per size, timm models ``{name: model}``.
    """
    torch.manual_seed(seed)
    source = _timm_swin_t()
    weights = source.state_dict()
    ours = {}
    for name, impl in (("densekit", "sdpa"), (REFERENCE, "reference")):
        model = densekit.create_backbone("swin_t", out_norm=False, attn_impl=impl)
        model.load_state_dict(timm_swin_to_densekit(weights), strict=True)
        model = model.eval().to(device)
        ours.update(with_accel_off(name, model, device) if name == "densekit" else {name: model})
    peers = {}
    for size in dict.fromkeys(tuple(s) for s in sizes):
        timm_model = source if size == (224, 224) else _load_timm_swin(_timm_swin_t(size), weights)
        timm_model = timm_model.eval().to(device)
        peers[size] = {"timm": timm_model, "timm (fused_attn=True)": _with_fused_attn(timm_model)}
    if dynamic_size is not None and tuple(dynamic_size) != (224, 224):
        dynamic = timm.create_model(_TIMM_SWIN_T, pretrained=False, num_classes=0, strict_img_size=False)
        dynamic.load_state_dict(weights, strict=True)
        peers[tuple(dynamic_size)][TIMM_DYNAMIC] = dynamic.eval().to(device)
    return ours, peers


# --------------------------------------------------------------------------- the suite's steps


def _inputs(config: BenchConfig, check: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed batch ``(B, 3, H, W)`` and the agreement batch at ``check`` (the same tensor where equal)."""
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.batch, 3, *config.size, generator=gen).to(config.device)
    xc = x if check == tuple(config.size) else torch.randn(config.batch, 3, *check, generator=gen).to(config.device)
    return x, xc


def _checked_diffs(ours: dict[str, nn.Module], peers: dict[str, nn.Module], xc: torch.Tensor, config: BenchConfig
                   ) -> dict[str, float]:
    """fp32 max abs differences against timm at the agreement size, checked to be within ``AGREEMENT_TOL``."""
    check = tuple(xc.shape[-2:])
    diffs = diffs_against_timm({**ours, **peers}, xc, "fp32", config.device)
    check_agreement(diffs, f"Swin-T maps against timm's at {check[0]}x{check[1]}")
    return diffs


def _timed(models: dict[str, nn.Module], x: torch.Tensor, config: BenchConfig
           ) -> tuple[dict[str, Stats], dict[str, float], dict[str, str]]:
    """Apply the mode to ``models``, time them interleaved; (stats, diffs against timm in the mode, compile
    statuses)."""
    cases, steps = backbone_cases(models, x, config)
    run_diffs = case_diffs_against_timm(cases)  # in compile mode, the first calls compile (before the timed rounds)
    stats = compare(cases, config.warmup, config.runs, config.device)
    return stats, run_diffs, compile_statuses(steps) if config.mode == "compile" else {}


# --------------------------------------------------------------------------- the suite's text


def _table(config: BenchConfig, check: tuple[int, int], stats: dict[str, Stats], check_diffs: dict[str, float],
           run_diffs: dict[str, float], statuses: dict[str, str]) -> str:
    """The results table: timings, the fp32 diff at the agreement size, the diff in the mode, compile's column."""
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    # In fp32 at the agreement size itself the run's diff is the checked one: one column, not the same twice.
    same = tuple(check) == tuple(config.size) and config.mode == "fp32"
    diff_headers = [f"max abs diff vs timm, fp32 @ {check[0]}x{check[1]} (checked <= {AGREEMENT_TOL:g})",
                    *([] if same else [f"max abs diff vs timm, {config.mode} @ {config.size[0]}x{config.size[1]}"]),
                    *mode_headers]
    diffs = {n: [f"{check_diffs[n]:.1e}" if n in check_diffs else "not checked",
                 *([] if same else [f"{run_diffs[n]:.1e}"]), *mode_cells.get(n, [])] for n in stats}
    return results_table(stats, "timm", diffs, diff_headers)


def _semantics(config: BenchConfig, check: tuple[int, int], statuses: dict[str, str]) -> str:
    """Why the agreement size may differ from the timing size, and the mode's note."""
    size = f"{config.size[0]}x{config.size[1]}"
    text = (
        f"Why two diff columns: at {size} not every stage side is a multiple of the window (7), and timm "
        "rolls (shifts) a block's input before padding it to window multiples while densekit, like official "
        "Swin, mmsegmentation and HuggingFace, pads first and then rolls; the padding lands in different "
        f"places, so the outputs at {size} differ by design, not by error. Both attend over the "
        "same padded grids, windows and shifts (densekit projects only the real tokens, see "
        "`densekit/layers/window_attention.py`). Agreement is therefore checked, with the same weights, at "
        f"{check[0]}x{check[1]}, the nearest size where every stage side is a window multiple."
        if check != tuple(config.size) else "Agreement is checked at the timing size itself.")
    note = mode_note(config.mode, statuses)
    return text + (f"\n\n{note}" if note else "")


def _dynamic_texts(stats: dict[str, Stats]) -> tuple[str, str]:
    """What ``TIMM_DYNAMIC`` is, and densekit's ratio against it; empty where it was not timed (at 224)."""
    if TIMM_DYNAMIC not in stats:
        return "", ""
    what = (f"\n`{TIMM_DYNAMIC}` is timm built once at its default 224 with `strict_img_size=False` "
            "(how one timm Swin runs at any input size): it rebuilds its shift masks on every forward "
            "and keeps the 224 build's per-stage windows and shifts (its last stage, 7x7 at 224, never "
            "shifts), so at other sizes it is a different model, whose outputs differ by design and are "
            "not checked.")
    ratio = stats["densekit"].median / stats[TIMM_DYNAMIC].median
    return what, f"; against `{TIMM_DYNAMIC}`: **{ratio:.2f}x** ({_ms(stats[TIMM_DYNAMIC].median)} ms)"


def _markdown(config: BenchConfig, check: tuple[int, int], table: str, stats: dict[str, Stats],
              semantics: str) -> str:
    """The suite's text: what is compared, the protocol, the table, the ratios, the semantics."""
    h, w = config.size
    dk, peer = stats["densekit"], stats["timm"]
    autocast = f", `torch.autocast('{config.device}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    dynamic_text, dynamic_ratio = _dynamic_texts(stats)
    accel_text = f"\n{ACCEL_WHAT}." if "densekit" + ACCEL_OFF in stats else ""
    accel_gain = f"; `densekit.accel` on / off: {accel_ratio(stats)}" if accel_text else ""
    return f"""
What: `densekit.create_backbone('swin_t', out_norm=False)` (the four stage maps, NCHW) against
`timm.create_model('{_TIMM_SWIN_T}', pretrained=False, num_classes=0, img_size=({h}, {w}))`
`.forward_intermediates(x, intermediates_only=True)`, on identical random weights (timm's, copied
into densekit: `layers.i` -> `stages.i`, `layers.i.downsample` -> `stages.{{i-1}}.downsample`,
`head`/`norm` dropped). timm is built for the input size (`img_size`), so its shift masks are
precomputed buffers and its per-stage windows and shifts are the ones densekit uses (with
`strict_img_size=False` it would rebuild masks every call and drop stage 3's shift at 512);
densekit caches its folded bias+mask per size. `timm` is timm's default path: its Swin attention
is matmul-softmax-matmul, because timm calls Swin's fused attention experimental (on only with
`TIMM_FUSED_ATTN=2`); `timm (fused_attn=True)` is the same model with SDPA switched on.
`{REFERENCE}` is `attn_impl='reference'` (per-window matmuls, official Swin; no `densekit.accel`).\
{accel_text}{dynamic_text}

Protocol: one process, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs every implementation once; the order is
reversed every other round); median and min over the rounds; ratio = median / timm's median
(below 1 = faster than timm).

{table}

densekit / timm (median): **{dk.median / peer.median:.2f}x** ({_ms(dk.median)} ms vs {_ms(peer.median)} ms)\
{dynamic_ratio}{accel_gain}.

{semantics}
"""


# --------------------------------------------------------------------------- the suite


def swin_t_backbone(config: BenchConfig) -> SuiteResult:
    """Swin-T backbone forward, densekit against timm ``forward_intermediates`` on identical weights."""
    h, w = config.size
    # Agreement is checked in fp32 at a size where timm and densekit share semantics (see
    # swin_agreement_size), then timing runs at the asked size with the same weights.
    check = (swin_agreement_size(h), swin_agreement_size(w))
    ours, peers = build_swin_t_models([check, (h, w)], config.device, config.seed, dynamic_size=(h, w))
    dynamic = peers[(h, w)].pop(TIMM_DYNAMIC, None)  # not held to agree: see build_swin_t_models
    x, xc = _inputs(config, check)
    check_diffs = _checked_diffs(ours, peers[check], xc, config)
    timed = {**ours, **peers[(h, w)], **({TIMM_DYNAMIC: dynamic} if dynamic else {})}
    del peers  # the agreement-size timm models are not timed
    stats, run_diffs, statuses = _timed(timed, x, config)
    table = _table(config, check, stats, check_diffs, run_diffs, statuses)
    markdown = _markdown(config, check, table, stats, _semantics(config, check, statuses))
    title = f"Swin-T backbone forward, {h}x{w}, batch {config.batch}, {config.mode}, {config.device}"
    extra = {"check_size": check, "check_diffs": check_diffs, "run_diffs": run_diffs,
             **({"compile": statuses} if statuses else {})}
    return SuiteResult("swin_t_backbone", title, stats, markdown, extra=extra)
