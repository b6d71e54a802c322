"""Swin-Unet (Cao et al. 2021) as an mmengine model: densekit's Swin encoder, a bottleneck norm, the mirrored decoder.

``forward(inputs, data_samples, mode)`` returns losses (``'loss'``: 0.4 x cross-entropy + 0.6 x the official
Dice by default, as the official trainer), data samples with ``seg_logits`` and ``pred_sem_seg`` at the
original size (``'predict'``; whole, sliding-window or TTA through ``test_cfg``, see ``BaseSegmentor``), or
logits ``(B, K, H, W)`` at the input size (``'tensor'``).

State-dict layout (``densekit.convert.swin_unet`` maps the official one to it)::

    backbone.*       densekit SwinTransformer (patch_embed, stages.{i}.blocks / downsample), no out norms
    norm             bottleneck LayerNorm after the last encoder stage
    decode_head.*    SwinUnetDecoder (expand, stages.{k}.concat / blocks / upsample, norm, up, conv_seg)

Any input size (the official model takes only its ``img_size``, 224): the image is zero-padded on the
right and bottom to a multiple of the patch size (``PatchEmbed``), patch merging pads odd sides, each
decoder stage crops its upsampled map to the size of its skip, and the logits are cropped back to
``(H, W)``. For sides that are multiples of ``patch_size * 2**(stages-1)`` (32 for Swin-T, e.g. 224)
nothing is padded or cropped and the computation is the official one.

``SwinUnet(version=2)`` builds the same network on Swin V2 blocks, encoder and decoder (``swin_unet_v2.py``).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..backbones import SwinTransformer, SwinTransformerV2, create_backbone
from ..backbones.pretrained import load_swin_unet_pretrained
from ..heads.swin_unet_decoder import SwinUnetDecoder
from ..registry import MODELS
from ..structures import SegDataSample
from .base_segmentor import BaseSegmentor, check_test_cfg, stack_labels
from .losses import DecodeLoss, build_decode_loss, pop_loss_keys
from .swin_unet_v2 import SwinUnetV2Decoder

# The official trainer's loss: 0.4 * torch's CrossEntropyLoss() (the mean over the counted pixels) + 0.6 * its
# DiceLoss(num_classes)(softmax=True).
DEFAULT_LOSS = [dict(type="CrossEntropyLoss", loss_weight=0.4, avg_non_ignore=True),
                dict(type="SwinUnetDiceLoss", loss_weight=0.6)]
# Medical slices come as float intensities already windowed to [0, 1]: no mean/std, no channel flip.
DEFAULT_PREPROCESSOR = dict(type="SegDataPreProcessor", mean=[0.0], std=[1.0], bgr_to_rgb=False)
# Swin version -> (encoder class, its config type name, decoder class): V1 blocks, or Swin V2's res-post-norm blocks
# with cosine attention in both encoder and decoder.
VERSIONS = {1: (SwinTransformer, "SwinTransformer", SwinUnetDecoder),
            2: (SwinTransformerV2, "SwinTransformerV2", SwinUnetV2Decoder)}


def check_version(version: object) -> int:
    """``version`` as given if it is a Swin version Swin-Unet is built on (1 or 2); a ValueError naming it if not."""
    if isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"SwinUnet version must be one of {sorted(VERSIONS)} (Swin V1 or V2 blocks), "
                         f"got version={version!r}")
    return int(version)


def build_swin_encoder(cfg: dict, version: int = 1) -> tuple[SwinTransformer | SwinTransformerV2, str | None, str]:
    """A densekit Swin of ``version`` without output norms from ``cfg``, plus its ``pretrained`` path and
    ``bias_resize``.

    ``cfg['type']`` is the version's class name (``'SwinTransformer'`` / ``'SwinTransformerV2'``, the default; the
    other keys are its arguments) or a densekit preset of that version (``'swin_t'``..., ``'swinv2_t'``...).
    ``pretrained`` is taken out: ``SwinUnet`` loads it into the whole model. ``bias_resize`` is V1's (V2 has no
    bias tables) and refused by name for V2.
    """
    cfg = dict(cfg)
    cls, name, _ = VERSIONS[check_version(version)]
    kind = cfg.pop("type", name)
    pretrained = cfg.pop("pretrained", None)
    bias_resize = cfg.pop("bias_resize", None)
    if bias_resize is not None and version == 2:
        raise ValueError("backbone.bias_resize: a Swin V2 encoder has no bias tables to resize (its position-bias "
                         "MLP moves to any window); give pretrained_window_size instead")
    if cfg.pop("out_norm", False):
        raise ValueError("Swin-Unet's encoder has no per-stage output norms (only the bottleneck norm): "
                         "leave out_norm out of the backbone config")
    cfg.pop("out_indices", None)  # every stage's input is a skip; the encoder's own outputs are unused
    named = {class_name: v for v, (_, class_name, _) in VERSIONS.items()}.get(kind)
    if named not in (None, version):  # the other version's class: refused before building it
        raise TypeError(_wrong_encoder(version, kind, kind, named))
    encoder = cls(out_norm=False, **cfg) if kind == name else create_backbone(kind, out_norm=False, **cfg)
    if not isinstance(encoder, cls):
        built = next((v for v, (c, _, _) in VERSIONS.items() if isinstance(encoder, c)), None)
        raise TypeError(_wrong_encoder(version, kind, type(encoder).__name__, built))
    return encoder, pretrained, bias_resize or "bicubic"


def _wrong_encoder(version: int, kind: str, found: str, found_version: int | None) -> str:
    hint = f" (a Swin V{found_version} encoder: build the SwinUnet with version={found_version})" \
        if found_version else ""
    return (f"SwinUnet version={version} needs a densekit {VERSIONS[version][1]} encoder, got {found} for "
            f"backbone.type={kind!r}{hint}")


def mirrored_decoder_settings(encoder: SwinTransformer | SwinTransformerV2) -> dict:
    """Decoder arguments that mirror ``encoder`` as the official ``SwinTransformerSys`` builds them.

    Decoder stage ``k`` (coarsest first) mirrors encoder stage ``n-2-k``: its depth, heads and the
    stochastic-depth rates of that stage's blocks (and, for V2, its ``pretrained_window_size``); window, MLP
    ratio, q/k/v bias, dropout, checkpointing and attention implementation are the encoder's.
    """
    stages = list(encoder.stages)
    mirrored = stages[-2::-1]
    first = stages[0].blocks[0]
    v2 = isinstance(encoder, SwinTransformerV2)
    settings = dict(
        in_channels=[stage.blocks[0].norm1.normalized_shape[0] for stage in stages],
        depths=[len(stage.blocks) for stage in mirrored],
        num_heads=[stage.blocks[0].attn.num_heads for stage in mirrored],
        window_size=encoder.window_size,
        drop_path_rates=[[_drop_path_rate(block) for block in stage.blocks] for stage in mirrored],
        patch_size=encoder.patch_size,
        mlp_ratio=first.mlp.fc1.out_features / first.mlp.fc1.in_features,
        # V2 attention keeps q and v biases as parameters of their own (and k none), V1 a biased qkv linear.
        qkv_bias=(first.attn.q_bias if v2 else first.attn.qkv.bias) is not None,
        drop_rate=first.attn.proj_drop.p,
        attn_drop_rate=first.attn.attn_drop,
        with_cp=stages[0].with_cp,
        attn_impl=first.attn.attn_impl,
    )
    if v2:
        settings["pretrained_window_size"] = [stage.blocks[0].attn.pretrained_window_size for stage in mirrored]
    return settings


def _drop_path_rate(block: nn.Module) -> float:
    return float(getattr(block.drop_path, "drop_prob", 0.0))


def _fit_rates(rates: Sequence[float], depth: int) -> list[float]:
    """The mirrored stage's rates for a decoder stage of another depth: the last rate repeats."""
    rates = list(rates) or [0.0]
    return [rates[min(j, len(rates) - 1)] for j in range(depth)]


@MODELS.register_module()
class SwinUnet(BaseSegmentor):
    """Swin-Unet for 2-D (slice-wise) segmentation.

    Args:
        backbone: the encoder: ``dict(type='SwinTransformer', embed_dim=96, depths=(2, 2, 2, 2),
            num_heads=(3, 6, 12, 24), window_size=7, in_chans=1, drop_path_rate=0.2, pretrained=None)``
            (the official Swin-Unet-T) or a densekit Swin preset name. ``pretrained``: ImageNet Swin weights in
            any layout densekit reads, mirrored into the decoder as the official ``load_from`` does, or an
            official Swin-Unet checkpoint (``densekit.backbones.pretrained.load_swin_unet_pretrained``).
        decode_head: ``dict(type='SwinUnetDecoder', num_classes=9, ...)``; arguments left out mirror the
            encoder (``mirrored_decoder_settings``); ``in_channels``, if given, must be the encoder's widths;
            ``loss_decode``: a ``dict(type=...)`` or a list of them (``densekit.models.losses``; default
            ``DEFAULT_LOSS``, the official 0.4 cross-entropy + 0.6 Dice); ``ignore_index`` (default 255).
        data_preprocessor: default ``SegDataPreProcessor`` with mean 0, std 1 and no channel flip.
        test_cfg: ``mode='whole'`` (default) or ``'slide'``, optional ``tta`` (see ``BaseSegmentor``).
        init_cfg: mmengine's.
        version: ``1`` (default: Swin V1 blocks, the published Swin-Unet) or ``2``: a ``SwinTransformerV2``
            encoder (``type='SwinTransformerV2'`` or a ``swinv2_*`` preset, with ``window_size`` and
            ``pretrained_window_size``) and ``SwinUnetV2Decoder`` stages of Swin V2 blocks (res-post-norm,
            scaled cosine attention, continuous position bias); ``PatchExpand``, ``FinalPatchExpand``, the skips
            and the losses are V1's. ``pretrained`` then takes Swin V2 ImageNet weights (official, timm or HF
            layout), mirrored into the decoder as for V1; a V1 file is refused by name.

    A 1-channel input to a 3-channel encoder is repeated to 3 channels (the official wrapper does this).

    Official values (``SwinTransformerSys`` defaults and ``configs/swin_tiny_patch4_window7_224_lite.yaml``):
    patch 4, embed 96, encoder depths 2-2-2-2, heads 3-6-12-24, window 7, MLP ratio 4, q/k/v bias, no absolute
    position embedding, patch norm, drop-path rate 0.2 (the class default is 0.1), ``in_chans`` 3 with grey
    slices repeated; decoder depths, heads and drop-path rates mirror the encoder (see ``SwinUnetDecoder``).
    """

    def __init__(self, backbone: dict | None = None, decode_head: dict | None = None,
                 data_preprocessor: dict | nn.Module | None = None, init_cfg: dict | None = None,
                 test_cfg: dict | None = None, version: int = 1) -> None:
        data_preprocessor = data_preprocessor or dict(DEFAULT_PREPROCESSOR)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)  # densekit's registry, as EncoderDecoder does
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.test_cfg = dict(mode="whole") if test_cfg is None else dict(test_cfg)
        check_test_cfg(self.test_cfg)
        backbone = backbone if backbone is not None else dict(
            embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.1)
        self.version = check_version(version)
        self.backbone, pretrained, bias_resize = build_swin_encoder(backbone, self.version)
        self.norm = nn.LayerNorm(self.backbone.stages[-1].blocks[0].norm1.normalized_shape[0])
        self.decode_head, self.loss_decode = self._build_decoder(copy.deepcopy(dict(decode_head or {})))
        self.neck = None  # the segmentor attributes the tools and converters look for
        self.auxiliary_head = None
        self.num_classes = self.decode_head.num_classes
        self.pretrained_report = None
        if pretrained:
            self.pretrained_report = load_swin_unet_pretrained(self, pretrained, bias_resize=bias_resize)

    def _build_decoder(self, cfg: dict) -> tuple[SwinUnetDecoder, DecodeLoss]:
        decoder_cls = VERSIONS[self.version][2]
        kind = cfg.pop("type", decoder_cls.__name__)
        if kind != decoder_cls.__name__:
            raise ValueError(f"a version={self.version} Swin-Unet's decode_head must be a {decoder_cls.__name__}, "
                             f"got {kind!r}")
        loss_decode, ignore_index = pop_loss_keys(cfg)
        mirrored = mirrored_decoder_settings(self.backbone)
        if "in_channels" in cfg and list(cfg["in_channels"]) != mirrored["in_channels"]:
            raise ValueError(f"decode_head.in_channels={list(cfg['in_channels'])} but the encoder's stages have "
                             f"{mirrored['in_channels']} channels")
        if "depths" in cfg and "drop_path_rates" not in cfg:
            cfg["drop_path_rates"] = [_fit_rates(r, d) for r, d in zip(mirrored["drop_path_rates"], cfg["depths"])]
        decoder = decoder_cls(**{**mirrored, **cfg})
        loss = build_decode_loss(loss_decode, "decode_head.loss_decode", num_classes=decoder.num_classes,
                                 ignore_index=ignore_index, align_corners=self.align_corners, default=DEFAULT_LOSS)
        return decoder, loss

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
        maps = encoder.forward_stages(inputs)
        # The official skips are the stages' inputs, before their blocks; the last stage has no patch merging.
        return self.norm(maps[-1][1]), [stage_input for stage_input, _ in maps]

    def encode_decode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the input size."""
        logits = self.decode_head(*self.encode(inputs))
        return logits[:, :, : inputs.shape[2], : inputs.shape[3]]

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` at the input size."""
        return self.encode_decode(inputs)

    # -- training ----------------------------------------------------------------------------------
    def loss(self, inputs: torch.Tensor, data_samples: list[SegDataSample]) -> dict[str, torch.Tensor]:
        """``loss_ce``, ``loss_dice`` (one key per ``loss_name``) and ``acc_seg`` against each sample's
        ``gt_sem_seg`` ``(1, H, W)``."""
        return self.loss_decode(self.encode_decode(inputs), stack_labels(data_samples, inputs.device))
