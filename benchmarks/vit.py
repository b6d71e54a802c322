"""Benchmark suite ``vit_b_backbone``: densekit's ViT-B/16 backbone against timm's ``vit_base_patch16_224``.

densekit does not re-implement ViT: ``create_backbone('vit_base_patch16_224', img_size=...)`` is timm's model inside
a ``ViTBackbone`` (blocks after the last returned one and the final norm pruned, the input padded to whole patches,
the four maps cropped back). This suite measures what that wrapper costs against timm's own
``forward_intermediates(indices=(3, 5, 7, 11), norm=False)`` on identical weights, agreement checked first. There
is no ViT-UPerNet peer (HF's UperNet has no ViT backbone), so the backbone is what is compared.
Listed in ``benchmarks.run.SUITES``.
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

TIMM_VIT_B = "vit_base_patch16_224"
OUT_INDICES = (3, 5, 7, 11)  # mmseg's MAE-UPerNet blocks
PATCH = 16


class TimmBlocks(nn.Module):
    """timm's ViT whose ``forward_intermediates(x, intermediates_only=True)`` returns the ``OUT_INDICES`` blocks
    without the final norm (what the harness calls on a ``timm`` model)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward_intermediates(self, x: torch.Tensor, intermediates_only: bool = True) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(OUT_INDICES), norm=False, intermediates_only=True)


def build_vit_b_models(device: str, size: tuple[int, int], seed: int = 0) -> dict[str, nn.Module]:
    """``{'densekit': ViTBackbone, 'timm': TimmBlocks(timm ViT-B/16)}`` in eval mode on ``device``, both built for
    ``size`` (position embedding at that grid), holding identical random weights (timm's init, seeded)."""
    torch.manual_seed(seed)
    peer = timm.create_model(TIMM_VIT_B, pretrained=False, num_classes=0, img_size=size)
    ours = densekit.create_backbone(TIMM_VIT_B, img_size=size, out_indices=OUT_INDICES, drop_path_rate=0.0)
    state = {f"model.{k}": v for k, v in peer.state_dict().items() if not k.startswith("norm.")}
    ours.load_state_dict(state, strict=True)
    return {"densekit": ours.eval().to(device), "timm": TimmBlocks(peer).eval().to(device)}


def _check_size(height: int, width: int) -> None:
    if height % PATCH or width % PATCH:
        raise ValueError(f"vit_b_backbone needs sides that are multiples of {PATCH}, got {height}x{width}: elsewhere "
                         f"timm's patchify conv floors the grid while densekit pads to ceil(H / {PATCH})")


def _markdown(config: BenchConfig, table: str, stats: dict[str, Stats], statuses: dict[str, str]) -> str:
    ours, peer = stats["densekit"], stats["timm"]
    autocast = f", `torch.autocast('{config.device}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    note = mode_note(config.mode, statuses)
    note = f"\n{note}\n" if note else ""
    return f"""
What: `densekit.create_backbone('{TIMM_VIT_B}', img_size={config.size[0]}, out_indices={OUT_INDICES})` (a
`ViTBackbone`: timm's ViT with the final norm pruned, the input padded to whole patches, the four blocks' tokens as
NCHW maps, class token dropped) against `timm.create_model('{TIMM_VIT_B}', img_size=..., num_classes=0)`
`.forward_intermediates(x, indices={list(OUT_INDICES)}, norm=False, intermediates_only=True)`. Identical weights:
timm's random init (seed {config.seed}) copied under `model.`, loaded strictly. Drop path 0, eval mode. Agreement of
the four maps is checked in fp32 at {config.size[0]}x{config.size[1]} before timing.

Protocol: one process, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs both implementations; the order is reversed
every other round); median and min over the rounds; ratio = median / timm's median (below 1 = faster
than timm).

{table}

densekit / timm (median): **{ours.median / peer.median:.2f}x** ({_ms(ours.median)} ms vs {_ms(peer.median)} ms).
{note}"""


def vit_b_backbone(config: BenchConfig) -> SuiteResult:
    """ViT-B/16 backbone forward, densekit against timm ``forward_intermediates`` on identical weights."""
    h, w = config.size
    _check_size(h, w)
    dev = config.device
    models = build_vit_b_models(dev, (h, w), config.seed)
    x = torch.randn(config.batch, 3, h, w, generator=torch.Generator().manual_seed(config.seed)).to(dev)

    check_diffs = diffs_against_timm(models, x, "fp32", dev)
    check_agreement(check_diffs, f"ViT-B/16 maps against timm's at {h}x{w}")
    cases, steps = backbone_cases(models, x, config)
    run_diffs = check_diffs if config.mode == "fp32" else case_diffs_against_timm(cases)
    stats = compare(cases, config.warmup, config.runs, dev)

    statuses = compile_statuses(steps) if config.mode == "compile" else {}
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    headers = [f"max abs diff vs timm, fp32 (checked <= {AGREEMENT_TOL:g})"]
    diffs = {n: [f"{check_diffs[n]:.1e}"] for n in stats}
    if config.mode != "fp32":
        headers.append(f"max abs diff vs timm, {config.mode}")
        diffs = {n: [*diffs[n], f"{run_diffs[n]:.1e}"] for n in stats}
    table = results_table(stats, "timm", {n: [*d, *mode_cells.get(n, [])] for n, d in diffs.items()},
                          headers + mode_headers)
    markdown = _markdown(config, table, stats, statuses)
    title = f"ViT-B/16 backbone forward, {h}x{w}, batch {config.batch}, {config.mode}, {dev}"
    extra = {"check_diffs": check_diffs, "run_diffs": run_diffs, **({"compile": statuses} if statuses else {})}
    return SuiteResult("vit_b_backbone", title, stats, markdown, extra=extra)
