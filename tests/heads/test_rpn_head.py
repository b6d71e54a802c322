"""RPNHead, anchors, box coder, assigner and sampler: the mmdetection 3.x conventions of their docstrings,
the loss's averaging, and proposals equal to torchvision's ``RegionProposalNetwork`` given the same weights.

Where mmdetection (followed by densekit) and torchvision differ, the tests pin the difference down:

- anchors: torchvision rounds base anchors (``torch.round``) and takes each level's stride as
  ``image_size // grid_size`` (61, not 64, for the 13-row P6 of an 800-row image); densekit keeps them
  exact on the nominal stride. The anchor order (cells row-major, ratio-major within a cell) is the same;
- box decoding: torchvision clamps ``dw``/``dh`` from above only (``log(1000 / 16)``), mmdet both ways;
- small boxes: torchvision drops ``w < 1e-3`` or ``h < 1e-3``, mmdet keeps ``w > min_bbox_size = 0``;
- rescaling: mmdet divides by ``scale_factor`` before the size filter and NMS (a non-uniform factor can
  change an IoU), torchvision rescales after (in ``GeneralizedRCNNTransform.postprocess``);
- training (not compared here): torchvision's ``Matcher`` keeps low-quality anchors on their own best box
  and has no ``min_pos_iou``; its box loss is smooth-L1 (beta 1/9) summed over sampled anchors and its
  objectness loss a mean, both divided by the sampled count, as densekit's L1 / BCE.

With densekit's anchors fed into torchvision (a one-line anchor generator), everything else coincides and
the top-1000 proposals for an 800x1216 image agree box for box, in order.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from densekit.heads import RPNHead
from densekit.heads.anchors import AnchorGenerator
from densekit.heads.assigner import MaxIoUAssigner, RandomSampler
from densekit.heads.box_coder import DeltaXYWHBBoxCoder
from densekit.registry import MODELS

IMAGE = (800, 1216)
STRIDES = (4, 8, 16, 32, 64)


# ----------------------------------------------------------------------------------------------- anchors
def _reference_anchors(feat_h: int, feat_w: int, stride: int, ratios, scales) -> np.ndarray:
    """Written from the docstring alone, in float64 loops: cells row-major, ratio-major inside a cell,
    ``w = stride * scale / sqrt(ratio)``, ``h = stride * scale * sqrt(ratio)``, centre ``(x * stride, y * stride)``."""
    out = []
    for y in range(feat_h):
        for x in range(feat_w):
            for ratio in ratios:
                for scale in scales:
                    w, h = stride * scale / math.sqrt(ratio), stride * scale * math.sqrt(ratio)
                    cx, cy = x * stride, y * stride
                    out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return np.array(out)


def test_anchors_64x96_at_stride_8_match_the_docstring_convention():
    gen = AnchorGenerator()  # mmdet's RPN: strides 4..64, ratios 0.5/1/2, scale 8
    anchors = gen.single_level_grid_anchors(1, (64, 96))  # level 1: stride 8
    expected = _reference_anchors(64, 96, 8, (0.5, 1.0, 2.0), (8,))
    assert anchors.shape == (64 * 96 * 3, 4)
    assert np.abs(anchors.double().numpy() - expected).max() < 1e-4
    # Base sizes 32..512, one per level, and a second scale interleaves as (ratio, scale).
    assert [round(float(b[1, 2] - b[1, 0])) for b in gen.base_anchors] == [32, 64, 128, 256, 512]
    two = AnchorGenerator(strides=[8], ratios=[0.5, 2.0], scales=[4, 8]).single_level_grid_anchors(0, (5, 7))
    assert np.abs(two.double().numpy() - _reference_anchors(5, 7, 8, (0.5, 2.0), (4, 8))).max() < 1e-4


def test_valid_flags_cover_the_image_padded_to_the_stride():
    gen = AnchorGenerator(strides=[8, 16])
    flags = gen.valid_flags([(10, 12), (5, 6)], pad_shape=(64, 40))
    grid = flags[0].view(10, 12, 3)
    assert grid[:8, :5].all() and not grid[8:].any() and not grid[:, 5:].any()
    assert flags[1].view(5, 6, 3)[:4, :3].all() and flags[1].sum() == 4 * 3 * 3


# ------------------------------------------------------------------------------------------------- coder
def test_coder_round_trips_boxes():
    gen = torch.Generator().manual_seed(0)
    priors = torch.rand(1000, 2, generator=gen) * 500
    priors = torch.cat([priors, priors + 16 + torch.rand(1000, 2, generator=gen) * 300], dim=1)
    boxes = torch.rand(1000, 2, generator=gen) * 500
    boxes = torch.cat([boxes, boxes + 8 + torch.rand(1000, 2, generator=gen) * 400], dim=1)  # within 62.5x
    for coder in (DeltaXYWHBBoxCoder(), DeltaXYWHBBoxCoder((0.1, -0.2, 0.0, 0.3), (0.1, 0.1, 0.2, 0.2))):
        decoded = coder.decode(priors.double(), coder.encode(priors.double(), boxes.double()))
        assert (decoded - boxes.double()).abs().max() < 1e-4  # float64: ~1e-13
        decoded = coder.decode(priors, coder.encode(priors, boxes))
        assert (decoded - boxes).abs().max() < 2.5e-4  # float32 (what the head uses): a few ulps at ~900 px
    # Unit deltas by hand: centre moves by one prior width/height, size scales by e.
    prior = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    out = DeltaXYWHBBoxCoder().decode(prior, torch.tensor([[1.0, -0.5, 1.0, 0.0]]))
    w = 20 * math.e
    assert torch.allclose(out, torch.tensor([[40 - w / 2, 0.0, 40 + w / 2, 40.0]]))  # centre (40, 20), h 40


def test_coder_clamps_dw_dh_both_ways_and_clips_to_the_image():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[100.0, 100.0, 200.0, 200.0]] * 2)
    out = coder.decode(prior, torch.tensor([[0.0, 0.0, 10.0, -10.0], [0.0, 0.0, 0.0, 0.0]]))
    assert out[0, 2] - out[0, 0] == pytest.approx(100 * 1000 / 16, rel=1e-5)   # clamped at log(62.5)
    assert out[0, 3] - out[0, 1] == pytest.approx(100 * 16 / 1000, rel=1e-5)   # mmdet clamps below too
    clipped = coder.decode(prior, torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2), max_shape=(300, 250))
    assert clipped[:, 0].min() >= 0 and clipped[:, 2].max() <= 250 and clipped[:, 3].max() <= 300


# --------------------------------------------------------------------------------------- assign, sample
def test_max_iou_assigner_rules():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 11.0],    # IoU 0.91 with gt 0: positive
        [20.0, 0.0, 32.0, 12.0],   # IoU 0.69 with gt 1: gt 1's best, >= min_pos_iou: positive (low quality)
        [20.0, 0.0, 34.0, 14.0],   # IoU 0.51 with gt 1: between thresholds: ignored
        [50.0, 50.0, 60.0, 60.0],  # IoU 0: negative
    ])
    result = MaxIoUAssigner().assign(anchors, gt)
    assert result.gt_inds.tolist() == [1, 2, -1, 0]
    shared = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])  # two identical boxes
    assert MaxIoUAssigner().assign(anchors[:1], shared).gt_inds.tolist() == [2]  # the later box wins, as mmdet
    assert MaxIoUAssigner().assign(anchors, gt[:0]).gt_inds.tolist() == [0, 0, 0, 0]
    low = MaxIoUAssigner(min_pos_iou=0.75).assign(anchors, gt)  # gt 1's best anchor is too poor now
    assert low.gt_inds.tolist() == [1, -1, -1, 0]


def test_random_sampler_keeps_at_most_half_positive():
    torch.manual_seed(0)
    gt_inds = torch.cat([torch.ones(300, dtype=torch.long), torch.zeros(1000, dtype=torch.long),
                         -torch.ones(50, dtype=torch.long)])
    from densekit.heads.assigner import AssignResult

    pos, neg = RandomSampler().sample(AssignResult(gt_inds, torch.zeros(len(gt_inds)), 1))
    assert len(pos) == 128 and len(neg) == 128 and (gt_inds[pos] > 0).all() and (gt_inds[neg] == 0).all()
    pos, neg = RandomSampler().sample(AssignResult(gt_inds[290:], torch.zeros(1060), 1))
    assert len(pos) == 10 and len(neg) == 246


# ------------------------------------------------------------------------------------------------ loss
def test_loss_averages_over_sampled_anchors():
    """Zero outputs: BCE is log 2 on every sampled anchor and the L1 loss the positives' |targets|, each
    divided by the number of sampled anchors in the batch (mmdet's ``avg_factor``)."""
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, feat_channels=8)
    feats = [torch.zeros(2, 8, 64 // s, 96 // s) for s in STRIDES[:4]] + [torch.zeros(2, 8, 1, 2)]
    with torch.no_grad():
        for conv in (head.rpn_cls, head.rpn_reg):
            conv.weight.zero_()
    gts = [InstanceData(bboxes=torch.tensor([[10.0, 12.0, 50.0, 40.0]])),
           InstanceData(bboxes=torch.tensor([[0.0, 0.0, 30.0, 30.0], [40.0, 20.0, 90.0, 60.0]]))]
    metas = [dict(img_shape=(64, 96), pad_shape=(64, 96))] * 2
    cls_scores, bbox_preds = head(feats)
    losses = head.loss_by_feat(cls_scores, bbox_preds, gts, metas)
    assert losses["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=1e-5)
    # Independently: assign every anchor (all valid here) and sum the positives' |targets| (no sampling
    # cut: fewer than 128 positives, and 256 anchors sampled per image from > 256 negatives).
    anchors = torch.cat(head.anchor_generator.grid_anchors([tuple(f.shape[-2:]) for f in feats]))
    total = 0.0
    for gt in gts:
        inds = MaxIoUAssigner().assign(anchors, gt.bboxes).gt_inds
        pos = inds > 0
        assert 0 < pos.sum() < 128
        total += DeltaXYWHBBoxCoder().encode(anchors[pos], gt.bboxes[inds[pos] - 1]).abs().sum().item()
    assert losses["loss_rpn_bbox"].item() == pytest.approx(total / 512, rel=1e-5)


def test_head_names_shapes_and_init():
    head = MODELS.build(dict(type="RPNHead", in_channels=256, feat_channels=256))
    keys = {k for k in head.state_dict()}
    assert keys == {f"rpn_{n}.{p}" for n in ("conv", "cls", "reg") for p in ("weight", "bias")}
    assert head.rpn_cls.weight.shape == (3, 256, 1, 1) and head.rpn_reg.weight.shape == (12, 256, 1, 1)
    assert abs(head.rpn_conv.weight.std().item() - 0.01) < 1e-3 and head.rpn_conv.bias.abs().max() == 0
    cls, reg = head([torch.randn(1, 256, 8 // s + 1, 12 // s + 1) for s in (1, 1, 1, 1, 1)])
    assert [c.shape[1] for c in cls] == [3] * 5 and [r.shape[1] for r in reg] == [12] * 5


def test_predict_reads_anchors_in_the_generator_order():
    """A score peak at cell (y, x), anchor a, with zero deltas, comes back as that exact anchor."""
    head = RPNHead(in_channels=4, feat_channels=4, test_cfg=dict(max_per_img=5))
    cls = [torch.full((1, 3, 40 // s, 60 // s), -5.0) for s in (4, 8, 16, 32)] + [torch.full((1, 3, 1, 1), -5.0)]
    reg = [torch.zeros(1, 12, *c.shape[-2:]) for c in cls]
    cls[1][0, 2, 3, 5] = 5.0  # level 1 (stride 8), ratio 2 (tall), cell y=3, x=5
    out = head.predict_by_feat(cls, reg, [dict(img_shape=(400, 600), scale_factor=(0.5, 0.25))])[0]
    w, h = 64 / math.sqrt(2), 64 * math.sqrt(2)
    expected = torch.tensor([40 - w / 2, 24 - h / 2, 40 + w / 2, 24 + h / 2]).clamp(min=0)
    expected = expected / torch.tensor([0.5, 0.25, 0.5, 0.25])  # back to original coordinates
    assert torch.allclose(out.bboxes[0], expected, atol=1e-4) and out.scores[0] == pytest.approx(1 / (1 + math.e ** -5))
    assert len(out.bboxes) == 5 and (out.labels == 0).all()


# ----------------------------------------------------------------------------------------- torchvision
def _random_head_pair(channels: int = 256, seed: int = 0) -> tuple[RPNHead, TVRPNHead]:
    """densekit and torchvision heads with the same weights, scaled so that scores spread and boxes move."""
    torch.manual_seed(seed)
    head = RPNHead(in_channels=channels, feat_channels=channels)
    with torch.no_grad():
        head.rpn_conv.weight.normal_(0, 0.03)
        head.rpn_cls.weight.normal_(0, 0.05)
        head.rpn_reg.weight.normal_(0, 0.02)
        for conv in (head.rpn_conv, head.rpn_cls, head.rpn_reg):
            conv.bias.normal_(0, 0.1)
    tv = TVRPNHead(channels, 3)
    tv.load_state_dict({"conv.0.0.weight": head.rpn_conv.weight, "conv.0.0.bias": head.rpn_conv.bias,
                        "cls_logits.weight": head.rpn_cls.weight, "cls_logits.bias": head.rpn_cls.bias,
                        "bbox_pred.weight": head.rpn_reg.weight, "bbox_pred.bias": head.rpn_reg.bias})
    return head, tv


def _fpn_features(channels: int = 256, seed: int = 1) -> list[torch.Tensor]:
    """P2..P6 of an 800x1216 input: strides 4..32, then P6 = max_pool2d(P5, 1, 2) (13x19)."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, channels, IMAGE[0] // s, IMAGE[1] // s, generator=gen) for s in STRIDES[:4]]
    return feats + [nn.functional.max_pool2d(feats[-1], 1, stride=2)]


def _tie_order(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``boxes`` sorted by descending score, then by coordinates (ties broken the same way on both sides)."""
    keys = [b.double().numpy() for b in boxes.T.flip(0)] + [-scores.double().numpy()]
    return boxes[torch.from_numpy(np.lexsort(keys))]


class _FixedAnchors(nn.Module):
    """A torchvision anchor generator that returns given anchors."""

    def __init__(self, anchors: torch.Tensor) -> None:
        super().__init__()
        self.anchors = anchors

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.anchors] * len(image_list.image_sizes)


def _torchvision_proposals(tv_head: TVRPNHead, anchor_generator: nn.Module, feats: list[torch.Tensor]):
    rpn = RegionProposalNetwork(anchor_generator, tv_head, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                                batch_size_per_image=256, positive_fraction=0.5,
                                pre_nms_top_n=dict(training=2000, testing=2000),
                                post_nms_top_n=dict(training=1000, testing=1000), nms_thresh=0.7).eval()
    images = ImageList(torch.zeros(1, 3, *IMAGE), [IMAGE])
    features = OrderedDict((str(i), f) for i, f in enumerate(feats))
    with torch.no_grad():
        boxes, _ = rpn(images, features)
        # RegionProposalNetwork.forward returns no scores: redo its last step for them.
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        objectness, deltas = tv_head(feats)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        anchors = anchor_generator(images, feats)
        proposals = rpn.box_coder.decode(deltas, anchors).view(1, -1, 4)
        boxes2, scores = rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
    assert torch.equal(boxes[0], boxes2[0])
    return boxes[0], scores[0]


def test_proposals_equal_torchvision_region_proposal_network_with_the_same_anchors():
    head, tv_head = _random_head_pair()
    feats = _fpn_features()
    start = time.perf_counter()
    with torch.no_grad():
        ours = head.predict(feats, None)[0]
    seconds = time.perf_counter() - start
    anchors = torch.cat(head.anchor_generator.grid_anchors([tuple(f.shape[-2:]) for f in feats]))
    boxes, scores = _torchvision_proposals(tv_head, _FixedAnchors(anchors), feats)
    assert len(ours.bboxes) == len(boxes) == 1000
    assert torch.equal(ours.scores, scores)  # the same scores in the same order
    # Proposals with exactly equal float32 scores come in either order (torch.sort vs torch.topk):
    # within each run of equal scores, compare in coordinate order.
    tied = int((scores[1:] == scores[:-1]).sum())
    ours_boxes, their_boxes = _tie_order(ours.bboxes, scores), _tie_order(boxes, scores)
    diff = (ours_boxes - their_boxes).abs().max().item()
    same_place = int(((ours.bboxes - boxes).abs().max(dim=1).values < 1e-3).sum())
    print(f"\n800x1216: top-1000 proposals, max |densekit - torchvision| = {diff:.1e} px, {same_place}/1000 at "
          f"the same rank, {tied} equal-score neighbours; densekit predict {seconds:.2f} s")
    assert diff < 1e-3
    assert same_place >= 1000 - 2 * tied
    widths = ours.bboxes[:, 2:] - ours.bboxes[:, :2]
    assert widths.min() > 1 and widths.max() > 400  # the deltas really moved the boxes


def test_torchvision_anchor_conventions_differ_as_documented():
    feats = _fpn_features(channels=1)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    ours = AnchorGenerator().grid_anchors(sizes)
    tv_gen = TVAnchorGenerator(sizes=tuple((8 * s,) for s in STRIDES), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    theirs = tv_gen(ImageList(torch.zeros(1, 3, *IMAGE), [IMAGE]), feats)[0].split([len(a) for a in ours])
    for level, (a, b) in enumerate(zip(ours, theirs)):
        if level < 4:  # same order and grid; torchvision's base anchors are rounded
            assert torch.equal(a.round(), b) and (a - b).abs().max() <= 0.5
        else:  # P6: 13 rows of an 800-row image -> torchvision's stride is 800 // 13 = 61 in y, 1216 // 19 = 64 in x
            assert torch.equal(a[:, 0::2].round(), b[:, 0::2])
            assert (b[:, 1] - a[:, 1].round()).abs().max() == 12 * (64 - 61)
