"""Benchmark suite ``rpn_r50_fpn``: densekit's RPN (ResNet-50 + FPN) against torchvision's Faster R-CNN proposal
stage (``backbone`` + ``rpn``, no ``roi_heads``) on identical weights.

The weights are torchvision's random ``fasterrcnn_resnet50_fpn`` (BatchNorm statistics and affines randomised,
the head's two 1x1 convs rescaled, see ``torchvision_faster_rcnn``) converted into
``configs/rpn_r50_fpn_1x_coco.py`` by ``densekit.inference.checkpoint.load_model_checkpoint``. torchvision's
``RegionProposalNetwork`` is given densekit's test settings (``match_rpn_settings``). Both take the same already
normalised batch: densekit ``RPN.predict`` and torchvision ``rpn(ImageList(x), backbone(x))``, so neither
normalises nor resizes.

Checked: the head's objectness and deltas per level agree (``HEAD_TOL``). Reported, not checked: how many of
densekit's best proposals torchvision also proposes (``top_k_match``), since mmdetection's and torchvision's
conventions differ by design (tests/heads/test_rpn_head.py). ``--mode`` applies to both alike
(``prepare_mode``): ``channels_last`` converts both models and the batch; ``compile`` compiles each one's feature
path (backbone, FPN, head) in place, leaving decoding and NMS eager. Listed in ``benchmarks.run.SUITES``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from densekit.apis import build_model, load_config
from densekit.convert import CheckpointError
from densekit.engine.compile import CompiledOrEager, compile_method
from densekit.inference.checkpoint import load_model_checkpoint
from densekit.inference.timing import Stats, compare

from .harness import (
    BenchConfig,
    SuiteResult,
    _ms,
    compile_statuses,
    inference_case,
    markdown_table,
    max_abs_diff,
    mode_column,
    mode_note,
    prepare_input,
    prepare_model,
    results_table,
)

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "rpn_r50_fpn_1x_coco.py"
HEAD_TOL = 1e-5
TOP_K, MATCH_IOU = 100, 0.9
# Spreads a trained RPN's outputs roughly have. A random ResNet-50 with random BatchNorm statistics gives
# logits and deltas of +-100: every score 0 or 1, every box clipped to the whole image, nothing to compare.
LOGIT_STD, DELTA_STD = 2.0, 0.25
CALIBRATION_SIZE = (224, 224)
PEER = "torchvision"


# --------------------------------------------------------------------------- models and weights


def _randomise_batchnorm(model: nn.Module) -> None:
    """Move every BatchNorm's running statistics and affine off (0, 1), so a conversion that mixed them up
    would show in the outputs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


def _calibrate_head(model: nn.Module, x: torch.Tensor, logit_std: float, delta_std: float) -> None:
    """Scale the weight and bias of the head's objectness and delta 1x1 convs so that, on ``x`` ``(B, 3, H, W)``,
    the logits have standard deviation ``logit_std`` and the deltas ``delta_std`` (outputs scale exactly)."""
    head = model.rpn.head
    with torch.no_grad():
        shared = [head.conv(f) for f in model.backbone(x).values()]
        for conv, target in ((head.cls_logits, logit_std), (head.bbox_pred, delta_std)):
            std = torch.cat([conv(t).flatten() for t in shared]).std()
            conv.weight.mul_(target / std)
            conv.bias.mul_(target / std)


def torchvision_faster_rcnn(seed: int = 0) -> nn.Module:
    """torchvision ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` seeded with ``seed``, in eval
    mode, BatchNorm randomised and the RPN head calibrated to ``LOGIT_STD`` / ``DELTA_STD`` on a seeded
    ``CALIBRATION_SIZE`` input (the same weights whatever size is benchmarked)."""
    torch.manual_seed(seed)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    _randomise_batchnorm(model)
    x = torch.randn(1, 3, *CALIBRATION_SIZE, generator=torch.Generator().manual_seed(seed))
    _calibrate_head(model, x, LOGIT_STD, DELTA_STD)
    return model


def torchvision_min_size(min_bbox_size: float) -> float:
    """torchvision's ``min_size`` that keeps the boxes densekit keeps: torchvision keeps ``w, h >= min_size``,
    mmdetection ``w, h > min_bbox_size`` (and every box when it is negative). The next float32 above
    ``min_bbox_size``, at least the smallest normal float32, turns one test into the other."""
    if min_bbox_size < 0:
        return 0.0  # clipped boxes have w, h >= 0
    above = np.nextafter(np.float32(min_bbox_size), np.float32(np.inf))
    return float(max(above, np.finfo(np.float32).tiny))


def match_rpn_settings(rpn: nn.Module, head: nn.Module) -> None:
    """Give torchvision's ``RegionProposalNetwork`` densekit ``RPNHead``'s test settings: pre-NMS top-k per level,
    proposals kept, NMS IoU, minimum box size, no score threshold. Raises ValueError where their anchors' sizes
    or ratios differ (the rounding of base anchors is a documented convention, not checked here)."""
    gen = head.anchor_generator
    ours = (tuple((b * float(s),) for b in gen.base_sizes for s in gen.scales), tuple(gen.ratios.tolist()))
    theirs = (tuple(tuple(float(v) for v in s) for s in rpn.anchor_generator.sizes),
              tuple(float(r) for r in rpn.anchor_generator.aspect_ratios[0]))
    if ours != theirs or len(set(rpn.anchor_generator.aspect_ratios)) != 1:
        raise ValueError(f"anchors differ: densekit (sizes, ratios) {ours}, torchvision {theirs}")
    cfg = head.test_cfg
    rpn._pre_nms_top_n = dict(training=cfg["nms_pre"], testing=cfg["nms_pre"])
    rpn._post_nms_top_n = dict(training=cfg["max_per_img"], testing=cfg["max_per_img"])
    rpn.nms_thresh = float(cfg["nms"]["iou_threshold"])
    rpn.score_thresh = 0.0
    rpn.min_size = torchvision_min_size(cfg.get("min_bbox_size", -1))


def build_rpn_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(densekit ``RPN`` of ``CONFIG``, torchvision Faster R-CNN) with identical weights and proposal settings,
    both in eval mode. Raises CheckpointError if the conversion leaves a densekit weight unloaded."""
    peer = torchvision_faster_rcnn(seed)
    ours = build_model(load_config(str(CONFIG)), pretrained=False).eval()
    report = load_model_checkpoint(ours, {"state_dict": peer.state_dict()}, source="torchvision (random)")
    if report.missing:
        raise CheckpointError(f"torchvision weights left densekit weights unloaded: {report.missing[:5]}")
    match_rpn_settings(peer.rpn, ours.rpn_head)
    return ours, peer


# --------------------------------------------------------------------------- forwards and agreement


def _proposal_forwards(ours: nn.Module, peer: nn.Module, x: torch.Tensor
                       ) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """The full proposal stage of each, on ``x`` ``(B, 3, H, W)``: a list of ``B`` boxes ``(N_i, 4)`` xyxy in
    input pixels, best first (densekit ``RPN.predict``; torchvision's ``rpn`` over its ``backbone``)."""
    sizes = [tuple(x.shape[-2:])] * len(x)

    def densekit() -> list[torch.Tensor]:
        return [s.pred_instances.bboxes for s in ours.predict(x, rescale=False)]

    def torchvision() -> list[torch.Tensor]:
        return peer.rpn(ImageList(x, sizes), peer.backbone(x))[0]

    return {"densekit": densekit, PEER: torchvision}


def _head_outputs(ours: nn.Module, peer: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
    """Objectness ``[(B, A, H_l, W_l)]`` then deltas ``[(B, 4A, H_l, W_l)]`` of both, levels P2..P6 in order."""
    objectness, deltas = ours(x, mode="tensor")
    tv_objectness, tv_deltas = peer.rpn.head(list(peer.backbone(x).values()))
    return [*objectness, *deltas], [*tv_objectness, *tv_deltas]


def top_k_match(ours: list[torch.Tensor], theirs: list[torch.Tensor], k: int = TOP_K, iou: float = MATCH_IOU
                ) -> float:
    """Fraction of densekit's best ``k`` boxes per image (``(N, 4)`` xyxy, best first) that overlap one of
    torchvision's best ``k`` with IoU > ``iou``, over every image of the batch."""
    matched = total = 0
    for a, b in zip(ours, theirs):
        a, b = a[:k].float(), b[:k].float()
        total += len(a)
        if len(a) and len(b):
            matched += int((box_iou(a, b).max(dim=1).values > iou).sum())
    return matched / max(total, 1)


def _agreement(ours: nn.Module, peer: nn.Module, x: torch.Tensor, mode: str, device: str) -> dict[str, float]:
    """Head outputs' max abs difference and largest magnitude, proposals matched, in ``mode``."""
    ours_heads, tv_heads = inference_case(lambda: _head_outputs(ours, peer, x), mode, device)()
    proposals = {n: inference_case(f, mode, device)() for n, f in _proposal_forwards(ours, peer, x).items()}
    return {"head_diff": max_abs_diff(ours_heads, tv_heads),
            "head_max": max(float(t.float().abs().max()) for t in tv_heads),
            "match": top_k_match(proposals["densekit"], proposals[PEER]),
            "count": min(len(b) for b in proposals["densekit"]), "peer_count": min(len(b) for b in proposals[PEER])}


def settings_table(cfg: dict, rpn: nn.Module) -> str:
    """Markdown table: each densekit ``test_cfg`` entry next to the torchvision attribute it was copied to."""
    rows = [("`nms_pre` (per level)", cfg["nms_pre"], "`_pre_nms_top_n['testing']`", rpn._pre_nms_top_n["testing"]),
            ("`max_per_img`", cfg["max_per_img"], "`_post_nms_top_n['testing']`", rpn._post_nms_top_n["testing"]),
            ("`nms.iou_threshold`", cfg["nms"]["iou_threshold"], "`nms_thresh`", rpn.nms_thresh),
            ("`min_bbox_size` (keeps `w, h >`)", cfg.get("min_bbox_size", -1), "`min_size` (keeps `w, h >=`)",
             f"{rpn.min_size:.3g}"),
            ("(none)", "-", "`score_thresh`", rpn.score_thresh)]
    return markdown_table(["densekit", "value", "torchvision", "value"], rows)


# --------------------------------------------------------------------------- modes


COMPILED_PATHS = ("anchors, decoding, top-k and NMS, whose sizes depend on the data, stay eager in both models, and "
                  "each model's feature path is compiled in place: densekit's `extract_feat` (ResNet-50 + FPN, what "
                  "`init_model(compile=True)` compiles for an RPN) and `rpn_head.forward`, torchvision's "
                  "`backbone.forward` (ResNet-50 + FPN) and `rpn.head.forward`, each by "
                  "`densekit.engine.compile.compile_method`")


def prepare_mode(ours: nn.Module, peer: nn.Module, mode: str) -> dict[str, list[CompiledOrEager]]:
    """Apply ``mode`` to both models in place: ``channels_last`` through ``prepare_model``; ``compile`` compiles
    each one's feature path (``COMPILED_PATHS``), compiling at the first call. Returns the compiled parts per
    implementation (``{}`` outside ``compile``), for ``compile_statuses``."""
    ours, peer = prepare_model(ours, mode), prepare_model(peer, mode)
    if mode != "compile":
        return {}
    return {"densekit": [compile_method(ours, "extract_feat"), compile_method(ours.rpn_head, "forward")],
            PEER: [compile_method(peer.backbone, "forward"), compile_method(peer.rpn.head, "forward")]}


# --------------------------------------------------------------------------- the suite


def _checked_agreement(ours: nn.Module, peer: nn.Module, x: torch.Tensor, device: str) -> dict[str, float]:
    """fp32 agreement on the models as built, before the mode; AssertionError where the heads differ beyond
    ``HEAD_TOL``."""
    checked = _agreement(ours, peer, x, "fp32", device)
    if checked["head_diff"] > HEAD_TOL:
        raise AssertionError(f"RPN head outputs disagree with torchvision beyond {HEAD_TOL}: "
                             f"{checked['head_diff']:.2e} (outputs up to {checked['head_max']:.1f})")
    return checked


def _table(config: BenchConfig, stats: dict[str, Stats], agreement: dict[str, dict[str, float]],
           statuses: dict[str, str]) -> str:
    """The results table: timings, head diffs and proposal overlap in fp32 (and in the mode), compile's column."""
    mode_headers, mode_cells = mode_column(config.mode, statuses)
    modes = list(agreement)
    diff_headers = [f"head max abs diff vs {PEER}, {m}" + (f" (checked <= {HEAD_TOL:g})" if m == "fp32" else "")
                    for m in modes]
    diff_headers += [f"top-{TOP_K} boxes with an IoU > {MATCH_IOU} match in {PEER}'s, {m}" for m in modes]
    diffs = {"densekit": [f"{agreement[m]['head_diff']:.1e}" for m in modes]
             + [f"{100 * agreement[m]['match']:.1f}%" for m in modes]}
    diffs = {n: [*diffs.get(n, ["-"] * len(diff_headers)), *mode_cells.get(n, [])] for n in stats}
    return results_table(stats, PEER, diffs, diff_headers + mode_headers)


def _markdown(config: BenchConfig, table: str, settings: str, stats: dict[str, Stats], checked: dict[str, float],
              statuses: dict[str, str]) -> str:
    """The suite's text: what is compared, the weights, the settings, what is checked, the protocol, the table."""
    h, w = config.size
    ratio = stats["densekit"].median / stats[PEER].median
    autocast = f" under `torch.autocast('{config.device}', dtype=torch.bfloat16)`" if config.mode == "bf16" else ""
    note = mode_note(config.mode, statuses, compiled_what=COMPILED_PATHS)
    note = f"\n{note}\n" if note else ""
    return f"""
What: the proposal stage of `configs/rpn_r50_fpn_1x_coco.py` (densekit `RPN.predict(x, rescale=False)`:
ResNet-50 (timm), FPN P2-P6, `RPNHead`, decoding, per-level top-k, `torchvision.ops.batched_nms`) against
torchvision's `fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)` cut after its proposals:
`rpn(ImageList(x, sizes), backbone(x))` (`roi_heads` not run). Both take the same normalised batch
`x` of shape ({config.batch}, 3, {h}, {w}): neither model's normalisation, resize nor padding
(`GeneralizedRCNNTransform`, `DetDataPreProcessor`) is timed.

Weights: torchvision's random init with every BatchNorm's running statistics and affine randomised, and the
head's objectness and delta 1x1 convs scaled so their outputs have standard deviations {LOGIT_STD} and
{DELTA_STD} on a {CALIBRATION_SIZE[0]}x{CALIBRATION_SIZE[1]} random input (as trained RPNs roughly do; raw random
weights give logits and deltas of +-100, every score 0 or 1 and every box the whole image), converted into
densekit by `densekit.inference.checkpoint.load_model_checkpoint` (torchvision layout, every densekit weight loaded).

Settings, densekit's `test_cfg` given to torchvision's `RegionProposalNetwork`:

{settings}

Checked: objectness and deltas of all five levels agree with torchvision's `rpn.head` on the same input
(fp32, max abs diff <= {HEAD_TOL:g}; outputs reach {checked['head_max']:.1f}). Reported only: proposal overlap,
the share of densekit's best {TOP_K} proposals per image that torchvision's best {TOP_K} contain with
IoU > {MATCH_IOU} ({checked['count']} and {checked['peer_count']} proposals kept per image in fp32). The
proposals differ by design, in mmdetection's and torchvision's conventions (tests/heads/test_rpn_head.py):
torchvision rounds base anchors and takes a level's stride as `image_size // grid_size` (61 rather than 64 at
P6 of an 800-row input), clamps `dw`/`dh` from above only; densekit follows mmdetection.

Protocol: one process, eval mode, `torch.inference_mode()`{autocast}, {config.warmup} warm-up round(s), then
{config.runs} timed rounds, interleaved (each round runs both; the order is reversed every other round); median
and min over the rounds; ratio = median / torchvision's median (below 1 = faster than torchvision).

{table}

densekit / torchvision (median): **{ratio:.2f}x** ({_ms(stats['densekit'].median)} ms vs {_ms(stats[PEER].median)} ms).
{note}"""


def rpn_r50_fpn(config: BenchConfig) -> SuiteResult:
    """RPN R50-FPN proposals (backbone, FPN, head, decoding, NMS), densekit against torchvision, same weights."""
    h, w = config.size
    dev = config.device
    ours, peer = build_rpn_pair(config.seed)
    ours, peer = ours.to(dev), peer.to(dev)
    x = torch.randn(config.batch, 3, h, w, generator=torch.Generator().manual_seed(config.seed)).to(dev)
    checked = _checked_agreement(ours, peer, x, dev)
    compiled = prepare_mode(ours, peer, config.mode)
    x = prepare_input(x, config.mode)
    # In compile mode, this first run compiles (before the timed rounds).
    run = checked if config.mode == "fp32" else _agreement(ours, peer, x, config.mode, dev)
    cases = {n: inference_case(f, config.mode, dev) for n, f in _proposal_forwards(ours, peer, x).items()}
    stats = compare(cases, config.warmup, config.runs, dev)

    statuses = compile_statuses(compiled)
    agreement = {"fp32": checked, config.mode: run}
    table = _table(config, stats, agreement, statuses)
    markdown = _markdown(config, table, settings_table(ours.rpn_head.test_cfg, peer.rpn), stats, checked, statuses)
    title = f"RPN R50-FPN proposals, {h}x{w}, batch {config.batch}, {config.mode}, {dev}"
    return SuiteResult("rpn_r50_fpn", title, stats, markdown,
                       extra={"agreement": agreement, **({"compile": statuses} if statuses else {})})
