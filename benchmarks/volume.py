"""Benchmark suite ``swin_unet_volume``: Swin-Unet inference over a volume, densekit's batched
``infer_volume`` against the official Swin-Unet test loop.

The peer is ``test_single_volume`` of the official repository (HuCaoFighting/Swin-Unet ``utils.py``), re-written
here on the same model: slice by slice, ``scipy.ndimage.zoom(order=3)`` of each slice to the model's input
size, one forward per slice, argmax, ``zoom(order=0)`` of the labels back to the slice size. densekit runs
batches of slices, resizes on the torch side (bicubic in, bilinear on the logits out) and argmaxes once per
batch. Both use one model with identical weights, with ``densekit.accel``'s CPU fast paths; an "accel off" row
runs densekit's loop on a copy without them. Agreement is the fraction of voxels with the same label. Listed in
``benchmarks.run.SUITES``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import zoom
from torch import nn

from densekit.apis import build_model, load_config
from densekit.datasets.medical.zoom import zoom_images, zoom_labels
from densekit.engine.compile import maybe_compile
from densekit.inference.timing import Stats, compare
from densekit.inference.volume import infer_volume

from .harness import (
    ACCEL_OFF,
    ACCEL_WHAT,
    BenchConfig,
    SuiteResult,
    _ms,
    accel_ratio,
    compile_statuses,
    gemm_rate,
    mode_column,
    mode_note,
    model_flops,
    prepare_model,
    results_table,
    with_accel_off,
)

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "swin_unet_t_synapse.py"
INPUT_SIZE = (224, 224)
TRAIN_ITERS = 60


def official_volume_loop(model: nn.Module, volume: np.ndarray, patch_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Labels ``(D, H, W)`` of ``volume`` ``(D, H, W)`` exactly as the official ``test_single_volume`` computes
    them (its ``zoom`` orders and per-slice batch of one), on the CPU."""
    prediction = np.zeros_like(volume, dtype=np.uint8)
    with torch.no_grad():
        for index in range(volume.shape[0]):
            slice_ = volume[index]
            x, y = slice_.shape
            if (x, y) != tuple(patch_size):
                slice_ = zoom(slice_, (patch_size[0] / x, patch_size[1] / y), order=3)
            logits = model(torch.from_numpy(slice_).unsqueeze(0).unsqueeze(0).float(), mode="tensor")
            out = torch.argmax(torch.softmax(logits, dim=1), dim=1).squeeze(0).numpy()
            prediction[index] = zoom(out, (x / patch_size[0], y / patch_size[1]), order=0) if (x, y) != tuple(
                patch_size) else out
    return prediction


def synthetic_volume(depth: int, height: int, width: int, seed: int = 0, organs: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for a windowed CT: ``(volume (D, H, W) float32 in [0, 1], labels (D, H, W) uint8)`` with
    ``organs`` ellipsoids (labels 1..organs, each of its own brightness) over a gradient, mild noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, depth), np.linspace(-1, 1, height), np.linspace(-1, 1, width),
                             indexing="ij", sparse=True)
    volume = np.broadcast_to(0.2 + 0.1 * (yy + 1), (depth, height, width)).astype(np.float32)
    labels = np.zeros((depth, height, width), np.uint8)
    for organ in range(1, organs + 1):
        centre, radius = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.2, 0.45, 3)
        inside = ((zz - centre[0]) / radius[0]) ** 2 + ((yy - centre[1]) / radius[1]) ** 2 + (
            (xx - centre[2]) / radius[2]) ** 2 < 1
        volume = np.where(inside, 0.3 + 0.15 * organ, volume)
        labels[inside] = organ
    volume = volume + rng.normal(0, 0.02, volume.shape)
    return np.clip(volume, 0, 1).astype(np.float32), labels


def fit_to_volume(model: nn.Module, volume: np.ndarray, labels: np.ndarray, iters: int, batch: int = 4,
                  seed: int = 0) -> None:
    """Make the model's labels organs rather than the noise of random weights: ``iters`` AdamW steps (lr 1e-3)
    of class-balanced cross-entropy on random slices zoomed to 224x224 as the official training does (cubic
    spline images, nearest labels). Class balancing matters: with plain cross-entropy (or the recipe's
    CE + Dice) tens of steps from scratch leave the model on background, and then two loops agree trivially;
    balanced, 60 steps make it label organ voxels (in the docs runs 5.5-6% of the voxels, organ Dice 0.13-0.17: a weak
    segmentation, but with label boundaries where the two loops can differ). Leaves the model in eval mode."""
    images = zoom_images(torch.from_numpy(volume)[:, None], INPUT_SIZE)
    targets = zoom_labels(torch.from_numpy(labels).long(), INPUT_SIZE)
    counts = torch.bincount(targets.reshape(-1)).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), 0.0)
    num_classes = model.decode_head.num_classes
    weight = F.pad(weight, (0, max(0, num_classes - len(weight))))
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(iters):
        index = torch.randint(0, len(volume), (batch,), generator=gen)
        loss = F.cross_entropy(model(images[index], mode="tensor"), targets[index], weight=weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def organ_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice over the organs (labels >= 1) present in ``truth``: shows the fitted model segments organs,
    so that agreement is not the trivial agreement of two all-background predictions."""
    organs = [k for k in np.unique(truth) if k > 0]
    return float(np.mean([2 * ((pred == k) & (truth == k)).sum() / ((pred == k).sum() + (truth == k).sum())
                          for k in organs]))


def build_swin_unet(seed: int = 0) -> nn.Module:
    """The Swin-Unet of ``configs/swin_unet_t_synapse.py`` with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return build_model(load_config(str(CONFIG)), pretrained=False).eval()


class ComputeFloor(NamedTuple):
    figures: dict[str, float]
    text: str


def slice_flops(model: nn.Module) -> int:
    """FLOPs of the model's forward on one slice at the model input size."""
    with torch.inference_mode():
        return model_flops(lambda: model(torch.zeros(1, 1, *INPUT_SIZE), mode="tensor"))


def compute_floor(per_slice: int, depth: int, medians: dict[str, float]) -> ComputeFloor:
    """The volume's model FLOPs (``per_slice`` times ``depth``) against this machine's matmul rates, measured now:
    how long the forwards alone would take if every FLOP ran at the fp32 or bf16 rate of a 2048x2048 ``a @ b``,
    and the rate each case's median reaches. ``medians``: seconds per case."""
    total = depth * per_slice
    rates = {"fp32": gemm_rate(), "bf16": gemm_rate(dtype=torch.bfloat16)}
    figures = {"gflop_per_slice": per_slice / 1e9, **{f"{k}_gemm_gflops": r / 1e9 for k, r in rates.items()},
               **{f"{k}_floor_ms": 1e3 * total / r for k, r in rates.items()}}
    reached = []
    for name, seconds in medians.items():
        kind = "bf16" if "bf16" in name else "fp32"  # the bf16 case's name says so; the others run fp32
        reached.append(f"{name} {total / seconds / 1e9:.1f} GFLOP/s = {total / seconds / rates[kind]:.0%} of the "
                       f"{kind} rate")
    text = (f"Compute floor: the model's forward is {per_slice / 1e9:.2f} GFLOP per {INPUT_SIZE[0]}x{INPUT_SIZE[1]} "
            f"slice (`torch.utils.flop_counter`: matmuls, convolutions and attention, 2 per multiply-add), "
            f"{total / 1e9:.0f} GFLOP for the {depth} slices. At this run's matmul rates (2048x2048 `a @ b`, median "
            f"of 5: fp32 {rates['fp32'] / 1e9:.1f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.1f} GFLOP/s) those FLOPs "
            f"alone take **{figures['fp32_floor_ms']:.0f} ms** in fp32 and **{figures['bf16_floor_ms']:.0f} ms** in "
            f"bf16, with no other work. Reached at the medians: {', '.join(reached)}.")
    return ComputeFloor(figures, text)


OFFICIAL = "official loop (zoom)"
OFF = "densekit" + ACCEL_OFF


def _volume_case(model: nn.Module, volume: np.ndarray, dtype: torch.dtype | None = None, resize: str = "zoom"
                 ) -> Callable[[], np.ndarray]:
    """densekit's ``infer_volume`` over ``volume`` with ``model``, under autocast to ``dtype`` if given."""

    def run() -> np.ndarray:
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            return infer_volume(model, volume, batch_size=16, input_size=INPUT_SIZE, progress=False, resize=resize)

    return run


def _cases(models: dict[str, nn.Module], volume: np.ndarray, mode: str) -> dict[str, Callable[[], np.ndarray]]:
    """The timed loops: the official one and densekit's on ``models['densekit']`` (with ``densekit.accel``),
    densekit's on the accel-off copy where there is one, and in fp32 and bf16 modes densekit's under bf16
    autocast and with ``resize='bilinear'``."""
    model = models["densekit"]
    cases = {OFFICIAL: lambda: official_volume_loop(model, volume), "densekit": _volume_case(model, volume)}
    if OFF in models:
        cases[OFF] = _volume_case(models[OFF], volume)
    if mode not in ("channels_last", "compile"):
        cases["densekit bf16"] = _volume_case(model, volume, torch.bfloat16)
        cases["densekit, resize='bilinear'"] = _volume_case(model, volume, resize="bilinear")
    return cases


@dataclass
class _Labels:
    """How each loop's labels compare: with the official loop's, and with the volume's truth."""

    agreement: dict[str, float]  # share of voxels with the official loop's label
    dice: dict[str, float]  # mean organ Dice against the truth
    organ_share: dict[str, float]  # share of voxels labelled organ

    @classmethod
    def of(cls, outputs: dict[str, np.ndarray], labels: np.ndarray) -> _Labels:
        reference = outputs[OFFICIAL]
        return cls({n: float((out == reference).mean()) for n, out in outputs.items()},
                   {n: organ_dice(out, labels) for n, out in outputs.items()},
                   {n: float((out > 0).mean()) for n, out in outputs.items()})


def _table(config: BenchConfig, stats: dict[str, Stats], found: _Labels, statuses: dict[str, str]) -> str:
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    return results_table(stats, OFFICIAL,
                         {n: [f"{100 * found.agreement[n]:.2f}%", f"{100 * found.organ_share[n]:.1f}%",
                              f"{found.dice[n]:.3f}", *mode_cells.get(n, [])] for n in stats},
                         ["voxels with the official loop's label", "voxels labelled organ",
                          "mean organ Dice vs the volume's truth", *mode_headers])


def _notes(config: BenchConfig, found: _Labels, statuses: dict[str, str]) -> str:
    """The mode's note and the caveat of a model that labels almost nothing organ, each after a blank line."""
    note = mode_note(config.mode, statuses, compiled_what="the one model both loops call has its forward compiled "
                     "by `densekit.engine.compile.maybe_compile`")
    if config.mode == "channels_last":
        note += (" The slices have one channel, the same bytes in either memory format, so here only the model's "
                 "weights change (its patch embedding and output convolutions).")
    caveat = ("\n\n**Caveat:** the model labels under 1% of the voxels organ in this run, so the voxel agreement "
              "above says little about how the two loops' labels differ; the timings stand."
              ) if found.organ_share[OFFICIAL] < 0.01 else ""
    return caveat + (f"\n\n{note}" if note else "")


def _markdown(config: BenchConfig, table: str, stats: dict[str, Stats], floor: ComputeFloor, notes: str) -> str:
    new_mode = config.mode in ("channels_last", "compile")
    ratio = stats["densekit"].median / stats[OFFICIAL].median
    precision = (f"fp32, mode `{config.mode}`, see below" if new_mode
                 else "fp32, and under\n`torch.autocast('cpu', dtype=torch.bfloat16)`")
    precision += ") against the official Swin-Unet `test_single_volume` loop"
    accel_text = f" {ACCEL_WHAT}; the official loop calls the same model as `densekit`." if OFF in stats else ""
    accel_gain = f"\n`densekit.accel` on / off (median): {accel_ratio(stats)}." if OFF in stats else ""
    return f"""
What: `densekit.inference.volume.infer_volume(model, volume, batch_size=16, resize='zoom')` (batches of 16
slices, the official resizing computed exactly on the torch side by `densekit.datasets.medical.zoom`: cubic-spline
zoom to 224x224 as two matmuls, one argmax per batch at 224x224, nearest zoom of the labels back as two gathers;
{precision} (`scipy.ndimage.zoom(order=3)` per slice, a forward per slice, `zoom(order=0)` of the labels), on
the same Swin-Unet (`configs/swin_unet_t_synapse.py`, seeded random weights fitted to the volume's organs by
{TRAIN_ITERS} steps of `fit_to_volume`) and a synthetic volume of 4 ellipsoid organs. The `resize='bilinear'` row
is `infer_volume`'s default (torch bicubic in, logits resized back bilinearly before the argmax: smoother
boundaries, other labels there). Median and min over {config.runs} interleaved rounds; ratio = median / the
official loop's median.{accel_text}

{table}

densekit / official loop (median, {config.mode if new_mode else "fp32"}): **{ratio:.2f}x** \
({_ms(stats['densekit'].median)} ms vs
{_ms(stats[OFFICIAL].median)} ms).{accel_gain}

{floor.text}{notes}
"""


def _fitted_models(config: BenchConfig, volume: np.ndarray, labels: np.ndarray) -> dict[str, nn.Module]:
    """The suite's Swin-Unet fitted to the volume, with and without ``densekit.accel`` (``with_accel_off``)."""
    model = build_swin_unet(config.seed)
    fit_to_volume(model, volume, labels, TRAIN_ITERS, seed=config.seed)
    return with_accel_off("densekit", model, "cpu")


def _apply_mode(models: dict[str, nn.Module], mode: str) -> None:
    """channels_last converts every model, compile compiles each one's forward, in place; fp32 and bf16 keep the
    cases they always had (the 1-channel slices are the same bytes in either memory format)."""
    for model in models.values():
        maybe_compile(prepare_model(model, mode), enabled=mode == "compile")


def swin_unet_volume(config: BenchConfig) -> SuiteResult:
    """Volume inference (``--batch`` = slices, default 100 here when 1 is given; ``--size`` = slice size)."""
    depth = config.batch if config.batch > 1 else 100
    h, w = config.size
    volume, labels = synthetic_volume(depth, h, w, config.seed)
    models = _fitted_models(config, volume, labels)
    per_slice = slice_flops(models["densekit"])  # before any compile
    _apply_mode(models, config.mode)
    cases = _cases(models, volume, config.mode)
    outputs = {name: fn() for name, fn in cases.items()}  # in compile mode, compiles (before the timed rounds)
    found = _Labels.of(outputs, labels)
    stats = compare(cases, max(0, config.warmup - 1), config.runs, "cpu")
    floor = compute_floor(per_slice, depth, {name: stats[name].median for name in stats})
    statuses = (compile_statuses({n: models[OFF if n == OFF else "densekit"] for n in cases})
                if config.mode == "compile" else {})
    markdown = _markdown(config, _table(config, stats, found, statuses), stats, floor, _notes(config, found, statuses))
    mode_title = f", {config.mode}" if config.mode in ("channels_last", "compile") else ""
    title = f"Swin-Unet volume inference, {depth} slices of {h}x{w}, model input 224x224{mode_title}, cpu"
    extra = {"agreement": found.agreement, "dice": found.dice, "organ_share": found.organ_share,
             "floor": floor.figures, **({"compile": statuses} if statuses else {})}
    return SuiteResult("swin_unet_volume", title, stats, markdown, extra=extra)
