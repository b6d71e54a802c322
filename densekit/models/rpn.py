"""Region Proposal Network detector (backbone -> FPN -> RPNHead) as an mmengine model, mmdetection 3.x's ``RPN``.

``forward(inputs, data_samples, mode)`` returns ``{'loss_rpn_cls', 'loss_rpn_bbox'}`` (``'loss'``),
data samples with ``pred_instances`` (``bboxes`` ``(N, 4)`` xyxy and ``scores`` ``(N,)``, original image
coordinates, ``N <= max_per_img``; ``'predict'``), or the head's raw outputs ``(objectness list, deltas
list)`` as mmdet's ``RPNHead.forward`` (``'tensor'``). Submodules are ``backbone``, ``neck`` and
``rpn_head`` (mmdet's names); mmdet's ``train_cfg.rpn`` and ``test_cfg.rpn`` go to the head.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModel

from ..registry import MODELS
from ..structures import DetDataSample
from .segmentor import build_backbone


@MODELS.register_module()
class RPN(BaseModel):
    """Class-agnostic proposals from any densekit/timm backbone.

    Args:
        backbone: ``dict(type=<densekit or timm backbone name>, ...)``, e.g. ``dict(type='resnet50',
            frozen_stages=1, norm_eval=True)``.
        neck: neck config, e.g. ``dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256,
            num_outs=5)`` (the fifth level by max-pooling P5); its ``in_channels`` must equal the backbone's.
        rpn_head: ``dict(type='RPNHead', in_channels=256, feat_channels=256, anchor_generator=..., ...)``.
        train_cfg, test_cfg: mmdet's ``dict(rpn=dict(...))`` (or the inner dict directly).
        data_preprocessor: ``DetDataPreProcessor`` config.
    """

    def __init__(self, backbone: dict, neck: dict, rpn_head: dict, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        data_preprocessor = data_preprocessor or dict(type="DetDataPreProcessor")
        if isinstance(data_preprocessor, dict):  # densekit's registry, as the segmentor does
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = build_backbone(backbone)
        self.neck = MODELS.build(neck)
        if list(self.neck.in_channels) != list(self.backbone.out_channels):
            raise ValueError(f"neck in_channels {list(self.neck.in_channels)} != backbone out_channels "
                             f"{list(self.backbone.out_channels)}")
        head_cfg = copy.deepcopy(dict(rpn_head))
        head_cfg["train_cfg"] = _rpn_part(train_cfg) or head_cfg.get("train_cfg")
        head_cfg["test_cfg"] = _rpn_part(test_cfg) or head_cfg.get("test_cfg")
        self.rpn_head = MODELS.build(head_cfg)
        if self.rpn_head.in_channels != self.neck.out_channels:
            raise ValueError(f"rpn_head in_channels {self.rpn_head.in_channels} != neck out_channels "
                             f"{self.neck.out_channels}")
        if self.neck.num_outs != self.rpn_head.anchor_generator.num_levels:
            raise ValueError(f"the neck has {self.neck.num_outs} levels but the anchor generator "
                             f"{self.rpn_head.anchor_generator.num_levels} strides")

    def extract_feat(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(B, 3, H, W)`` -> FPN levels ``[(B, C, H / s, W / s)]`` for ``s`` in the anchor strides."""
        return self.neck(self.backbone(inputs))

    def forward(self, inputs: torch.Tensor, data_samples: list[DetDataSample] | None = None, mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.rpn_head(self.extract_feat(inputs))
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def loss(self, inputs: torch.Tensor, data_samples: list[DetDataSample]) -> dict[str, torch.Tensor]:
        """``{'loss_rpn_cls', 'loss_rpn_bbox'}`` against the samples' ``gt_instances`` (labels unused)."""
        if data_samples is None:
            raise ValueError("mode='loss' needs data_samples with gt_instances")
        return self.rpn_head.loss(self.extract_feat(inputs), data_samples)

    def predict(self, inputs: torch.Tensor, data_samples: list[DetDataSample] | None = None,
                rescale: bool = True) -> list[DetDataSample]:
        """Each sample gains ``pred_instances`` (``bboxes``, ``scores``, ``labels`` zeros), in original image
        coordinates when ``rescale`` (dividing by the sample's ``scale_factor``)."""
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                                        scale_factor=(1.0, 1.0)))
                            for _ in range(inputs.shape[0])]
        results = self.rpn_head.predict(self.extract_feat(inputs), data_samples, rescale=rescale)
        for sample, result in zip(data_samples, results):
            sample.pred_instances = result
        return data_samples


def _rpn_part(cfg: dict | None) -> dict | None:
    """mmdet nests the RPN's settings as ``cfg['rpn']``; accept that or the inner dict."""
    if cfg is None:
        return None
    cfg = dict(cfg)
    return dict(cfg["rpn"]) if "rpn" in cfg else cfg
