"""Region Proposal Network head (Ren et al. 2015) with mmdetection 3.x's ``RPNHead`` names and conventions.

Parameters are named as mmdet's (``rpn_conv``, ``rpn_cls``, ``rpn_reg``), so its checkpoints load by
name. Anchors: ``densekit.models.anchors``; deltas: ``densekit.models.box_coder``; targets:
``densekit.models.assigner``.

**Loss** (``loss_by_feat``), per batch, as mmdet's ``AnchorHead``:

- anchors outside an image's own padded area (``valid_flags`` from ``pad_shape``) take no part
  (``allowed_border=-1``; with ``allowed_border >= 0`` anchors crossing the image border are dropped too);
- each image's anchors are assigned (``MaxIoUAssigner``) and 256 sampled (``RandomSampler``); positives
  get label 1 and delta targets, sampled negatives label 0, everything else weight 0;
- ``avg_factor`` = number of sampled anchors (positives + negatives) over the whole batch;
- ``loss_rpn_cls = w_cls * sum(BCE-with-logits over sampled anchors) / (avg_factor + eps)``;
- ``loss_rpn_bbox = w_bbox * sum(|delta - target| over the 4 coordinates of positives) / (avg_factor + eps)``
  (L1 on normalised deltas, ``eps = finfo(float32).eps``; SmoothL1 with ``beta`` optionally).

mmdet sums the same quantities level by level; the total is identical.

**Proposals** (``predict_by_feat``), per image, as mmdet's ``RPNHead._predict_by_feat_single``:

1. per level: sigmoid scores, the ``nms_pre`` highest (all when ``nms_pre <= 0``), sorted descending;
2. decode against their anchors and clip to ``img_shape`` (the resized, unpadded image);
3. with ``rescale``: divide by ``scale_factor = (w, h)`` into original image coordinates (mmdet rescales
   before filtering and NMS);
4. drop boxes whose width or height is not ``> min_bbox_size`` (when ``min_bbox_size >= 0``);
5. ``torchvision.ops.batched_nms`` at ``nms.iou_threshold`` with the level index as the group;
6. the first ``max_per_img`` by score.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import nn
from torchvision.ops import batched_nms

from ..registry import MODELS
from .anchors import AnchorGenerator, anchor_inside_flags
from .assigner import MaxIoUAssigner, RandomSampler
from .box_coder import DeltaXYWHBBoxCoder

DEFAULT_TRAIN_CFG = dict(
    assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, ignore_iof_thr=-1),
    sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
    allowed_border=-1, pos_weight=-1, debug=False)
# mmdet 3.x configs/_base_/models/rpn_r50_fpn.py (the RPN-only recipe; Faster R-CNN's RPN uses nms_pre=1000).
DEFAULT_TEST_CFG = dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)


def _from_cfg(cfg, cls: type, names: tuple[str, ...]):
    """``cls`` itself, or built from an mmdet-style ``dict(type=<one of names>, **arguments)``."""
    if isinstance(cfg, cls):
        return cfg
    cfg = dict(cfg)
    kind = cfg.pop("type", names[0])
    if kind not in names:
        raise ValueError(f"densekit's RPN supports {' / '.join(names)} here, got type={kind!r}")
    return cls(**cfg)


class _RPNLoss:
    """mmdet ``CrossEntropyLoss(use_sigmoid=True)`` and ``L1Loss`` / ``SmoothL1Loss`` weights from their configs."""

    def __init__(self, loss_cls: dict | None, loss_bbox: dict | None) -> None:
        cls_cfg = dict(loss_cls or dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0))
        bbox_cfg = dict(loss_bbox or dict(type="L1Loss", loss_weight=1.0))
        if cls_cfg.pop("type", "CrossEntropyLoss") != "CrossEntropyLoss" or not cls_cfg.pop("use_sigmoid", True):
            raise ValueError(f"RPNHead supports loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True), "
                             f"got {loss_cls}")
        self.cls_weight = float(cls_cfg.pop("loss_weight", 1.0))
        self.bbox_type = bbox_cfg.pop("type", "L1Loss")
        if self.bbox_type not in ("L1Loss", "SmoothL1Loss"):
            raise ValueError(f"RPNHead supports loss_bbox of type L1Loss or SmoothL1Loss, got {self.bbox_type!r}")
        self.bbox_weight = float(bbox_cfg.pop("loss_weight", 1.0))
        self.beta = float(bbox_cfg.pop("beta", 1.0))
        leftover = {k: v for k, v in {**cls_cfg, **bbox_cfg}.items() if k != "reduction" or v != "mean"}
        if leftover:
            raise ValueError(f"unsupported RPN loss options: {leftover}")

    def box_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = (pred - target).abs()
        if self.bbox_type == "L1Loss":
            return diff
        return torch.where(diff < self.beta, 0.5 * diff * diff / self.beta, diff - 0.5 * self.beta)


@MODELS.register_module()
class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then per anchor a 1x1 objectness logit and 1x1 box deltas, on every level.

    Args:
        in_channels: channels ``C`` of every input level (the FPN width).
        feat_channels: channels of the shared 3x3 conv.
        anchor_generator: an ``AnchorGenerator`` or mmdet's ``dict(type='AnchorGenerator', strides=...,
            ratios=..., scales=...)``; default strides 4..64, ratios 0.5/1/2, scale 8.
        bbox_coder: a ``DeltaXYWHBBoxCoder`` or its mmdet config dict; default means 0, stds 1.
        loss_cls: mmdet ``dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)``.
        loss_bbox: mmdet ``dict(type='L1Loss', loss_weight=1.0)`` (or ``SmoothL1Loss`` with ``beta``).
        train_cfg: mmdet's ``train_cfg.rpn``: ``assigner``, ``sampler``, ``allowed_border``, ``pos_weight``.
        test_cfg: mmdet's ``test_cfg.rpn``: ``nms_pre``, ``max_per_img``, ``nms=dict(iou_threshold=...)``,
            ``min_bbox_size``.

    Shapes:
        ``forward([(B, C, H_l, W_l)])`` -> ``([(B, A, H_l, W_l)], [(B, 4A, H_l, W_l)])`` with ``A`` anchors
        per cell; channel ``a`` of a level's objectness and channels ``4a..4a+3`` of its deltas belong to
        anchor ``a`` of the cell (the order of ``AnchorGenerator``).
    """

    def __init__(self, in_channels: int = 256, feat_channels: int = 256,
                 anchor_generator: AnchorGenerator | dict | None = None,
                 bbox_coder: DeltaXYWHBBoxCoder | dict | None = None, loss_cls: dict | None = None,
                 loss_bbox: dict | None = None, train_cfg: dict | None = None, test_cfg: dict | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.anchor_generator = _from_cfg(anchor_generator or {}, AnchorGenerator, ("AnchorGenerator",))
        self.bbox_coder = _from_cfg(bbox_coder or {}, DeltaXYWHBBoxCoder, ("DeltaXYWHBBoxCoder",))
        self.losses = _RPNLoss(loss_cls, loss_bbox)
        self.train_cfg = {**copy.deepcopy(DEFAULT_TRAIN_CFG), **(train_cfg or {})}
        self.test_cfg = {**copy.deepcopy(DEFAULT_TEST_CFG), **(test_cfg or {})}
        self.assigner = _from_cfg(self.train_cfg["assigner"], MaxIoUAssigner, ("MaxIoUAssigner",))
        self.sampler = _from_cfg(self.train_cfg["sampler"], RandomSampler, ("RandomSampler",))
        nms_type = self.test_cfg["nms"].get("type", "nms")
        if nms_type != "nms":
            raise ValueError(f"RPNHead supports test_cfg.nms type 'nms', got {nms_type!r}")
        num_anchors = self.anchor_generator.num_base_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(f"a shared head needs the same number of anchors on every level, got {num_anchors}")
        self.num_anchors = num_anchors[0]
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's ``init_cfg=dict(type='Normal', layer='Conv2d', std=0.01)``: weights N(0, 0.01), biases 0."""
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Objectness logits and deltas per level (see the class docstring for shapes)."""
        if len(feats) != self.anchor_generator.num_levels:
            raise ValueError(f"RPNHead got {len(feats)} feature levels for {self.anchor_generator.num_levels} "
                             f"anchor strides {self.anchor_generator.strides}")
        cls_scores, bbox_preds = [], []
        for x in feats:
            x = F.relu(self.rpn_conv(x))
            cls_scores.append(self.rpn_cls(x))
            bbox_preds.append(self.rpn_reg(x))
        return cls_scores, bbox_preds

    # -- training ----------------------------------------------------------------------------------
    def loss(self, feats: Sequence[torch.Tensor], batch_data_samples: list) -> dict[str, torch.Tensor]:
        """Losses against each sample's ``gt_instances`` (and ``ignored_instances`` when present)."""
        cls_scores, bbox_preds = self(feats)
        gts = [s.gt_instances for s in batch_data_samples]
        ignored = [s.ignored_instances if "ignored_instances" in s else None for s in batch_data_samples]
        return self.loss_by_feat(cls_scores, bbox_preds, gts, [s.metainfo for s in batch_data_samples], ignored)

    def get_targets(self, anchors: torch.Tensor, featmap_sizes: list[tuple[int, int]], gt: InstanceData,
                    img_meta: dict, ignored: InstanceData | None) -> tuple[torch.Tensor, ...]:
        """One image's ``(labels, label_weights, bbox_targets, bbox_weights, num_sampled)`` over all
        ``(N, 4)`` ``anchors`` (every level, concatenated)."""
        pad_shape = img_meta.get("pad_shape", img_meta["img_shape"])
        valid = torch.cat(self.anchor_generator.valid_flags(featmap_sizes, pad_shape, anchors.device))
        inside = anchor_inside_flags(anchors, valid, img_meta["img_shape"], self.train_cfg["allowed_border"])
        if not inside.any():
            raise ValueError("no anchor lies inside the image: check img_shape/pad_shape in the metainfo or "
                             "increase train_cfg.allowed_border")
        index = torch.nonzero(inside).flatten()
        chosen = anchors[index]
        gt_bboxes = gt.bboxes.to(anchors).reshape(-1, 4)
        ignored_bboxes = ignored.bboxes.to(anchors).reshape(-1, 4) if ignored is not None and "bboxes" in ignored \
            else None
        result = self.assigner.assign(chosen, gt_bboxes, ignored_bboxes)
        pos, neg = self.sampler.sample(result)
        labels = anchors.new_zeros(len(anchors))
        label_weights = anchors.new_zeros(len(anchors))
        bbox_targets = anchors.new_zeros(len(anchors), 4)
        bbox_weights = anchors.new_zeros(len(anchors), 4)
        pos_weight = self.train_cfg.get("pos_weight", -1)
        if len(pos):
            bbox_targets[index[pos]] = self.bbox_coder.encode(chosen[pos], gt_bboxes[result.gt_inds[pos] - 1])
            bbox_weights[index[pos]] = 1.0
            labels[index[pos]] = 1.0
            label_weights[index[pos]] = 1.0 if pos_weight <= 0 else float(pos_weight)
        label_weights[index[neg]] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights, len(pos) + len(neg)

    def loss_by_feat(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                     batch_gt_instances: list[InstanceData], batch_img_metas: list[dict],
                     batch_gt_instances_ignore: list[InstanceData | None] | None = None) -> dict[str, torch.Tensor]:
        """``{'loss_rpn_cls', 'loss_rpn_bbox'}`` from the head's outputs (rules in the module docstring)."""
        batch = cls_scores[0].shape[0]
        featmap_sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        device = cls_scores[0].device
        anchors = torch.cat(self.anchor_generator.grid_anchors(featmap_sizes, device))
        ignored = batch_gt_instances_ignore or [None] * batch
        targets = [self.get_targets(anchors, featmap_sizes, gt, meta, ign)
                   for gt, meta, ign in zip(batch_gt_instances, batch_img_metas, ignored)]
        labels, label_weights, bbox_targets, bbox_weights = (torch.stack([t[k] for t in targets]) for k in range(4))
        avg_factor = sum(t[4] for t in targets) + torch.finfo(torch.float32).eps
        logits = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1) for c in cls_scores], dim=1)
        deltas = torch.cat([b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for b in bbox_preds], dim=1)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss_cls = (bce * label_weights).sum() / avg_factor
        loss_bbox = (self.losses.box_loss(deltas, bbox_targets) * bbox_weights).sum() / avg_factor
        return dict(loss_rpn_cls=self.losses.cls_weight * loss_cls, loss_rpn_bbox=self.losses.bbox_weight * loss_bbox)

    # -- inference ---------------------------------------------------------------------------------
    def predict(self, feats: Sequence[torch.Tensor], batch_data_samples: list | None = None,
                rescale: bool = True) -> list[InstanceData]:
        """Proposals per image (``bboxes`` ``(N, 4)``, ``scores`` ``(N,)``, ``labels`` zeros), in original
        image coordinates when ``rescale``; ``N <= max_per_img``, sorted by score."""
        cls_scores, bbox_preds = self(feats)
        if batch_data_samples is None:
            shape = tuple(feats[0].shape[-2:])
            shape = (shape[0] * self.anchor_generator.strides[0], shape[1] * self.anchor_generator.strides[0])
            metas = [dict(img_shape=shape, scale_factor=(1.0, 1.0))] * len(cls_scores[0])
        else:
            metas = [s.metainfo for s in batch_data_samples]
        return self.predict_by_feat(cls_scores, bbox_preds, metas, rescale=rescale)

    def predict_by_feat(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                        batch_img_metas: list[dict], rescale: bool = True) -> list[InstanceData]:
        """Proposals from the head's outputs (steps in the module docstring)."""
        featmap_sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = self.anchor_generator.grid_anchors(featmap_sizes, cls_scores[0].device)
        return [self._predict_single([c[i].detach() for c in cls_scores], [b[i].detach() for b in bbox_preds],
                                     anchors, meta, rescale) for i, meta in enumerate(batch_img_metas)]

    def _predict_single(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                        anchors: list[torch.Tensor], img_meta: dict, rescale: bool) -> InstanceData:
        cfg = self.test_cfg
        nms_pre = cfg.get("nms_pre", -1)
        scores, deltas, priors, levels = [], [], [], []
        for level, (cls, reg, prior) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            score = cls.permute(1, 2, 0).reshape(-1).sigmoid()
            delta = reg.permute(1, 2, 0).reshape(-1, 4)
            if 0 < nms_pre < len(score):
                score, order = score.sort(descending=True)
                score, order = score[:nms_pre], order[:nms_pre]
                delta, prior = delta[order], prior[order]
            scores.append(score)
            deltas.append(delta)
            priors.append(prior)
            levels.append(torch.full_like(score, level, dtype=torch.long))
        scores, levels = torch.cat(scores), torch.cat(levels)
        bboxes = self.bbox_coder.decode(torch.cat(priors), torch.cat(deltas), max_shape=img_meta["img_shape"][:2])
        if rescale:
            sx, sy = img_meta.get("scale_factor", (1.0, 1.0))[:2]
            bboxes = bboxes * bboxes.new_tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy])
        min_size = cfg.get("min_bbox_size", -1)
        if min_size >= 0:
            keep = ((bboxes[:, 2] - bboxes[:, 0]) > min_size) & ((bboxes[:, 3] - bboxes[:, 1]) > min_size)
            bboxes, scores, levels = bboxes[keep], scores[keep], levels[keep]
        keep = batched_nms(bboxes, scores, levels, float(cfg["nms"]["iou_threshold"]))[:cfg["max_per_img"]]
        result = InstanceData()
        result.bboxes, result.scores = bboxes[keep], scores[keep]
        result.labels = torch.zeros(len(keep), dtype=torch.long, device=bboxes.device)
        return result
