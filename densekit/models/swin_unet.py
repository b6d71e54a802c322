"""Swin-Unet (Cao et al. 2021) as an mmengine model: densekit's Swin encoder, a bottleneck norm, the mirrored decoder.

``forward(inputs, data_samples, mode)`` returns losses (``'loss'``: 0.4 x cross-entropy + 0.6 x soft Dice
by default, as the official trainer), data samples with ``seg_logits`` and ``pred_sem_seg`` at the
original size (``'predict'``), or logits ``(B, K, H, W)`` at the input size (``'tensor'``).

State-dict layout (``densekit.convert.swin_unet`` maps the official one to it)::

    backbone.*       densekit SwinTransformer (patch_embed, stages.{i}.blocks / downsample), no out norms
    norm             bottleneck LayerNorm after the last encoder stage
    decode_head.*    SwinUnetDecoder (expand, stages.{k}.concat / blocks / upsample, norm, up, conv_seg)

Any input size (the official model takes only its ``img_size``, 224): the image is zero-padded on the
right and bottom to a multiple of the patch size (``PatchEmbed``), patch merging pads odd sides, each
decoder stage crops its upsampled map to the size of its skip, and the logits are cropped back to
``(H, W)``. For sides that are multiples of ``patch_size * 2**(stages-1)`` (32 for Swin-T, e.g. 224)
nothing is padded or cropped and the computation is the official one.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.structures import PixelData
from torch import nn

from ..backbones import SwinTransformer, create_backbone
from ..backbones.pretrained import load_swin_unet_pretrained
from ..heads.swin_unet_decoder import SwinUnetDecoder
from ..layers.rel_pos_bias import resize_abs_pos_embed
from ..registry import MODELS
from ..structures import SegDataSample
from .losses import SegLoss

# The official trainer's loss: 0.4 * CE + 0.6 * Dice.
DEFAULT_LOSS = dict(ce_weight=0.4, dice_weight=0.6, ignore_index=255)
# Medical slices come as float intensities already windowed to [0, 1]: no mean/std, no channel flip.
DEFAULT_PREPROCESSOR = dict(type="SegDataPreProcessor", mean=[0.0], std=[1.0], bgr_to_rgb=False)


def build_swin_encoder(cfg: dict) -> tuple[SwinTransformer, str | None, str]:
    """A densekit Swin without output norms from ``cfg``, plus its ``pretrained`` path and ``bias_resize``.

    ``cfg['type']`` is ``'SwinTransformer'`` (default; the other keys are its arguments) or a densekit Swin
    preset (``'swin_t'``...). ``pretrained`` is taken out: ``SwinUnet`` loads it into the whole model.
    """
    cfg = dict(cfg)
    kind = cfg.pop("type", "SwinTransformer")
    pretrained = cfg.pop("pretrained", None)
    bias_resize = cfg.pop("bias_resize", "bicubic")
    if cfg.pop("out_norm", False):
        raise ValueError("Swin-Unet's encoder has no per-stage output norms (only the bottleneck norm): "
                         "leave out_norm out of the backbone config")
    cfg.pop("out_indices", None)  # every stage's input is a skip; the encoder's own outputs are unused
    if kind == "SwinTransformer":
        encoder = SwinTransformer(out_norm=False, **cfg)
    else:
        encoder = create_backbone(kind, out_norm=False, **cfg)
    if not isinstance(encoder, SwinTransformer):
        raise TypeError(f"Swin-Unet needs a densekit Swin encoder, got {type(encoder).__name__} for {kind!r}")
    return encoder, pretrained, bias_resize


def mirrored_decoder_settings(encoder: SwinTransformer) -> dict:
    """Decoder arguments that mirror ``encoder`` as the official ``SwinTransformerSys`` builds them.

    Decoder stage ``k`` (coarsest first) mirrors encoder stage ``n-2-k``: its depth, heads and the
    stochastic-depth rates of that stage's blocks; window, MLP ratio, q/k/v bias, dropout, checkpointing
    and attention implementation are the encoder's.
    """
    stages = list(encoder.stages)
    mirrored = stages[-2::-1]
    first = stages[0].blocks[0]
    return dict(
        in_channels=[stage.blocks[0].norm1.normalized_shape[0] for stage in stages],
        depths=[len(stage.blocks) for stage in mirrored],
        num_heads=[stage.blocks[0].attn.num_heads for stage in mirrored],
        window_size=encoder.window_size,
        drop_path_rates=[[_drop_path_rate(block) for block in stage.blocks] for stage in mirrored],
        patch_size=encoder.patch_size,
        mlp_ratio=first.mlp.fc1.out_features / first.mlp.fc1.in_features,
        qkv_bias=first.attn.qkv.bias is not None,
        drop_rate=first.attn.proj_drop.p,
        attn_drop_rate=first.attn.attn_drop,
        with_cp=stages[0].with_cp,
        attn_impl=first.attn.attn_impl,
    )


def _drop_path_rate(block: nn.Module) -> float:
    return float(getattr(block.drop_path, "drop_prob", 0.0))


def _fit_rates(rates: Sequence[float], depth: int) -> list[float]:
    """The mirrored stage's rates for a decoder stage of another depth: the last rate repeats."""
    rates = list(rates) or [0.0]
    return [rates[min(j, len(rates) - 1)] for j in range(depth)]


@MODELS.register_module()
class SwinUnet(BaseModel):
    """Swin-Unet for 2-D (slice-wise) segmentation.

    Args:
        backbone: the encoder: ``dict(type='SwinTransformer', embed_dim=96, depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24), window_size=7, in_chans=1, drop_path_rate=0.2, pretrained=None)``
            (the official Swin-Unet-T) or a densekit Swin preset name. ``pretrained``: ImageNet Swin weights in
            any layout densekit reads, mirrored into the decoder as the official ``load_from`` does, or an
            official Swin-Unet checkpoint (``densekit.backbones.pretrained.load_swin_unet_pretrained``).
        decode_head: ``dict(type='SwinUnetDecoder', num_classes=9, ...)``; arguments left out mirror the
            encoder (``mirrored_decoder_settings``); ``in_channels``, if given, must be the encoder's widths;
            ``loss_decode``: ``SegLoss`` arguments (default 0.4 CE + 0.6 Dice, ignore 255).
        data_preprocessor: default ``SegDataPreProcessor`` with mean 0, std 1 and no channel flip.
        init_cfg: mmengine's.

    A 1-channel input to a 3-channel encoder is repeated to 3 channels (the official wrapper does this).

    Official values (``SwinTransformerSys`` defaults and ``configs/swin_tiny_patch4_window7_224_lite.yaml``):
    patch 4, embed 96, encoder depths 2-2-2-2, heads 3-6-12-24, window 7, MLP ratio 4, q/k/v bias, no absolute
    position embedding, patch norm, drop-path rate 0.2 (the class default is 0.1), ``in_chans`` 3 with grey
    slices repeated; decoder depths, heads and drop-path rates mirror the encoder (see ``SwinUnetDecoder``).
    """

    def __init__(self, backbone: dict | None = None, decode_head: dict | None = None,
                 data_preprocessor: dict | nn.Module | None = None, init_cfg: dict | None = None) -> None:
        data_preprocessor = data_preprocessor or dict(DEFAULT_PREPROCESSOR)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)  # densekit's registry, as EncoderDecoder does
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = backbone if backbone is not None else dict(
            embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.1)
        self.backbone, pretrained, bias_resize = build_swin_encoder(backbone)
        self.norm = nn.LayerNorm(self.backbone.stages[-1].blocks[0].norm1.normalized_shape[0])
        self.decode_head, self.loss_decode = self._build_decoder(copy.deepcopy(dict(decode_head or {})))
        self.neck = None  # the segmentor attributes the tools and converters look for
        self.auxiliary_head = None
        self.num_classes = self.decode_head.num_classes
        self.pretrained_report = None
        if pretrained:
            self.pretrained_report = load_swin_unet_pretrained(self, pretrained, bias_resize=bias_resize)

    def _build_decoder(self, cfg: dict) -> tuple[SwinUnetDecoder, SegLoss]:
        kind = cfg.pop("type", "SwinUnetDecoder")
        if kind != "SwinUnetDecoder":
            raise ValueError(f"Swin-Unet's decode_head must be a SwinUnetDecoder, got {kind!r}")
        loss_cfg = dict(DEFAULT_LOSS, **(cfg.pop("loss_decode", None) or {}))
        loss_cfg.pop("type", None)
        mirrored = mirrored_decoder_settings(self.backbone)
        if "in_channels" in cfg and list(cfg["in_channels"]) != mirrored["in_channels"]:
            raise ValueError(f"decode_head.in_channels={list(cfg['in_channels'])} but the encoder's stages have "
                             f"{mirrored['in_channels']} channels")
        if "depths" in cfg and "drop_path_rates" not in cfg:
            cfg["drop_path_rates"] = [_fit_rates(r, d) for r, d in zip(mirrored["drop_path_rates"], cfg["depths"])]
        return SwinUnetDecoder(**{**mirrored, **cfg}), SegLoss(**loss_cfg)

    # -- logits ------------------------------------------------------------------------------------
    def encode(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The official ``forward_features``: ``(B, C, H, W)`` -> normalised bottleneck ``(B, h, w, 8C)`` and
        the input of every encoder stage (the skips), finest first, NHWC."""
        encoder = self.backbone
        if inputs.dim() != 4:
            raise ValueError(f"expected inputs (B, C, H, W), got {tuple(inputs.shape)}")
        if inputs.shape[1] == 1 and encoder.in_chans == 3:
            inputs = inputs.expand(-1, 3, -1, -1)
        if inputs.shape[1] != encoder.in_chans:
            raise ValueError(f"expected {encoder.in_chans} input channels, got {tuple(inputs.shape)}")
        x = encoder.patch_embed(inputs)
        if encoder.absolute_pos_embed is not None:
            grid = (x.shape[1], x.shape[2])
            x = x + resize_abs_pos_embed(encoder.absolute_pos_embed, grid, encoder.pretrain_grid).view(1, *grid, -1)
        x = encoder.pos_drop(x)
        skips = []
        for stage in encoder.stages:
            skips.append(x)  # the official skip is each stage's input, before its blocks
            _, x = stage(x)
        return self.norm(x), skips

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the input size."""
        logits = self.decode_head(*self.encode(inputs))
        return logits[:, :, : inputs.shape[2], : inputs.shape[3]]

    def forward(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None,
                mode: str = "tensor"):
        if mode == "loss":
            return self.loss(inputs, data_samples)
        if mode == "predict":
            return self.predict(inputs, data_samples)
        if mode == "tensor":
            return self.encode_decode(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    # -- training and inference --------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        """``loss_ce``, ``loss_dice`` and ``acc_seg`` against each sample's ``gt_sem_seg`` ``(1, H, W)``."""
        if not data_samples:
            raise ValueError("mode='loss' needs data_samples with gt_sem_seg")
        labels = torch.stack([s.gt_sem_seg.data.squeeze(0) for s in data_samples]).long().to(inputs.device)
        return self.loss_decode(self.encode_decode(inputs), labels)

    def predict(self, inputs: torch.Tensor, data_samples: list[SegDataSample] | None = None) -> list[SegDataSample]:
        """Per sample: ``seg_logits`` ``(K, H0, W0)`` and ``pred_sem_seg`` ``(1, H0, W0)`` at ``ori_shape``.

        Logits are cropped to ``img_shape`` (the preprocessor pads on the right and bottom), unflipped,
        and resized bilinearly to ``ori_shape``.
        """
        logits = self.encode_decode(inputs)
        if data_samples is None:
            shape = tuple(inputs.shape[-2:])
            data_samples = [SegDataSample(metainfo={"img_shape": shape, "ori_shape": shape})
                            for _ in range(inputs.shape[0])]
        for logit, sample in zip(logits, data_samples):
            h, w = tuple(sample.metainfo.get("img_shape", inputs.shape[-2:]))[:2]
            logit = logit[:, :h, :w]
            if sample.metainfo.get("flip", False):
                logit = logit.flip(-1)
            ori = tuple(sample.metainfo.get("ori_shape", (h, w)))[:2]
            if tuple(logit.shape[-2:]) != ori:
                logit = F.interpolate(logit[None], size=ori, mode="bilinear", align_corners=False)[0]
            sample.seg_logits = PixelData(data=logit)
            sample.pred_sem_seg = PixelData(data=logit.argmax(0, keepdim=True))
        return data_samples
