"""Benchmark suite ``swin_unet_volume``: Swin-Unet inference over a volume, densekit's batched
``infer_volume`` against the official Swin-Unet test loop.

The peer is ``test_single_volume`` of the official repository (HuCaoFighting/Swin-Unet ``utils.py``), re-written
here on the same model: slice by slice, ``scipy.ndimage.zoom(order=3)`` of each slice to the model's input
size, one forward per slice, argmax, ``zoom(order=0)`` of the labels back to the slice size. densekit runs
batches of slices, resizes on the torch side (bicubic in, bilinear on the logits out) and argmaxes once per
batch. Both use one model with identical weights; agreement is the fraction of voxels with the same label.
Registered in ``benchmarks.harness`` on import (``tools/benchmark.py`` imports it).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.ndimage import zoom
from torch import nn

from densekit import accel
from densekit.engine.compile import maybe_compile
from densekit.inference.volume import infer_volume

from .harness import (
    BenchConfig,
    SuiteResult,
    _ms,
    compare,
    compile_statuses,
    gemm_rate,
    mode_column,
    mode_note,
    model_flops,
    prepare_model,
    register_suite,
    results_table,
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
    import torch.nn.functional as F

    from densekit.datasets.medical.zoom import zoom_images, zoom_labels

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
    from densekit.apis import build_model, load_config

    torch.manual_seed(seed)
    # densekit's CPU fast paths, as init_model installs them
    return accel.optimize(build_model(load_config(str(CONFIG)), pretrained=False).eval())


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


@register_suite
def swin_unet_volume(config: BenchConfig) -> SuiteResult:
    """Volume inference (``--batch`` = slices, default 100 here when 1 is given; ``--size`` = slice size)."""
    depth = config.batch if config.batch > 1 else 100
    h, w = config.size
    model = build_swin_unet(config.seed)
    volume, labels = synthetic_volume(depth, h, w, config.seed)
    fit_to_volume(model, volume, labels, TRAIN_ITERS, seed=config.seed)
    per_slice = slice_flops(model)  # before any compile
    # channels_last / compile change the one model both loops call (their 1-channel slices are the same bytes in
    # either memory format); fp32 and bf16 keep the cases they always had.
    new_mode = config.mode in ("channels_last", "compile")
    maybe_compile(prepare_model(model, config.mode), enabled=config.mode == "compile")

    def densekit_case(dtype: torch.dtype | None, resize: str = "zoom") -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
            with autocast:
                return infer_volume(model, volume, batch_size=16, input_size=INPUT_SIZE, progress=False,
                                    resize=resize)

        return run

    cases = {"official loop (zoom)": lambda: official_volume_loop(model, volume),
             "densekit": densekit_case(None), "densekit bf16": densekit_case(torch.bfloat16),
             "densekit, resize='bilinear'": densekit_case(None, "bilinear")}
    if new_mode:
        del cases["densekit bf16"], cases["densekit, resize='bilinear'"]
    outputs = {name: fn() for name, fn in cases.items()}  # in compile mode, compiles (before the timed rounds)
    reference = outputs["official loop (zoom)"]
    agreement = {name: float((out == reference).mean()) for name, out in outputs.items()}
    dice = {name: organ_dice(out, labels) for name, out in outputs.items()}
    organ_share = {name: float((out > 0).mean()) for name, out in outputs.items()}
    stats = compare(cases, max(0, config.warmup - 1), config.runs, "cpu")
    floor = compute_floor(per_slice, depth, {name: stats[name].median for name in stats})
    statuses = compile_statuses({name: model for name in cases}) if config.mode == "compile" else {}
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    table = results_table(stats, "official loop (zoom)",
                          {n: [f"{100 * agreement[n]:.2f}%", f"{100 * organ_share[n]:.1f}%", f"{dice[n]:.3f}",
                               *mode_cells.get(n, [])] for n in outputs},
                          ["voxels with the official loop's label", "voxels labelled organ",
                           "mean organ Dice vs the volume's truth", *mode_headers])
    note = mode_note(config.mode, statuses, compiled_what="the one model both loops call has its forward compiled "
                     "by `densekit.engine.compile.maybe_compile`")
    if config.mode == "channels_last":
        note += (" The slices have one channel, the same bytes in either memory format, so here only the model's "
                 "weights change (its patch embedding and output convolutions).")
    note_text = f"\n\n{note}" if note else ""
    caveat = ("\n\n**Caveat:** the model labels under 1% of the voxels organ in this run, so the voxel agreement "
              "above says little about how the two loops' labels differ; the timings stand."
              ) if organ_share["official loop (zoom)"] < 0.01 else ""
    mode_title = f", {config.mode}" if new_mode else ""
    title = f"Swin-Unet volume inference, {depth} slices of {h}x{w}, model input 224x224{mode_title}, cpu"
    ratio = stats["densekit"].median / stats["official loop (zoom)"].median
    precision = (f"fp32, mode `{config.mode}`, see below" if new_mode
                 else "fp32, and under\n`torch.autocast('cpu', dtype=torch.bfloat16)`")
    precision += ") against the official Swin-Unet `test_single_volume` loop"
    ratio_mode = config.mode if new_mode else "fp32"
    markdown = f"""
What: `densekit.inference.volume.infer_volume(model, volume, batch_size=16, resize='zoom')` (batches of 16
slices, the official resizing computed exactly on the torch side by `densekit.datasets.medical.zoom`: cubic-spline
zoom to 224x224 as two matmuls, one argmax per batch at 224x224, nearest zoom of the labels back as two gathers;
{precision} (`scipy.ndimage.zoom(order=3)` per slice, a forward per slice, `zoom(order=0)` of the labels), on
the same Swin-Unet (`configs/swin_unet_t_synapse.py`, seeded random weights fitted to the volume's organs by
{TRAIN_ITERS} steps of `fit_to_volume`) and a synthetic volume of 4 ellipsoid organs. The `resize='bilinear'` row
is `infer_volume`'s default (torch bicubic in, logits resized back bilinearly before the argmax: smoother
boundaries, other labels there). Median and min over {config.runs} interleaved rounds; ratio = median / the
official loop's median.

{table}

densekit / official loop (median, {ratio_mode}): **{ratio:.2f}x** ({_ms(stats['densekit'].median)} ms vs
{_ms(stats['official loop (zoom)'].median)} ms).

{floor.text}{caveat}{note_text}
"""
    extra = {"agreement": agreement, "dice": dice, "organ_share": organ_share, "floor": floor.figures,
             **({"compile": statuses} if statuses else {})}
    return SuiteResult("swin_unet_volume", title, stats, markdown, extra=extra)
