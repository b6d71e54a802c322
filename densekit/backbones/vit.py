"""Plain Vision Transformer (ViT, MAE, DINO, DINOv2) as a densekit backbone: timm's ViT, its blocks' tokens as maps.

A plain ViT has one scale: every block outputs ``(B, P + N, C)`` tokens (``P`` class/register tokens, ``N`` patches
on a ``H/p x W/p`` grid). Dense heads take the tokens of a few blocks (mmseg: 3, 5, 7, 11 of ViT-B) as NCHW maps at
stride ``p``; a neck (MultiLevelNeck, Feature2Pyramid, SimpleFeaturePyramid) makes the pyramid.

densekit wraps timm's ``VisionTransformer`` (DESIGN.md §2): ``dynamic_img_size=True`` makes timm interpolate the
position embedding to each input's grid, and ``forward_intermediates(output_fmt='NCHW')`` drops the prefix tokens
and reshapes. Checkpoints load through densekit's converters (``convert/vit.py``), not timm's filter, because the
embedding must be resized to ``img_size`` as MAE and mmseg do (bicubic, no antialias; timm antialiases).
"""
from __future__ import annotations

import os

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_backbone
from .base import Backbone, local_checkpoint, output_size
from .pretrained import load_vit_pretrained

# densekit presets -> timm ViTs (mmseg's ViT-S/B/L with patch 16).
VIT_PRESETS = {"vit_s": "vit_small_patch16_224", "vit_b": "vit_base_patch16_224", "vit_l": "vit_large_patch16_224"}


def is_timm_vit(name: str) -> bool:
    """Whether ``name`` is one of timm's plain ViTs (``vision_transformer`` module: ViT, MAE, DINO, DINOv2)."""
    return timm.is_model(name) and timm.models.is_model_in_modules(name.split(".")[0], ["vision_transformer"])


class ViTBackbone(Backbone):
    """A timm ViT returning the tokens of chosen blocks as NCHW maps at stride ``patch_size``, at any input size.

    Args:
        model_name: a timm ViT (``vit_base_patch16_224``, ``vit_small_patch14_dinov2``,
            ``vit_small_patch14_reg4_dinov2``).
        pretrained: local checkpoint in the official MAE, DINO, DINOv2, timm, mmseg ``VisionTransformer`` / ``MAE``
            or densekit layout (``convert/vit.py``), its position embedding resized to ``img_size``; None = random.
        img_size: the training image size the position embedding is kept at (``int`` or ``(H, W)``); None =
            timm's default for the model (224, or 518 for DINOv2). Other input sizes interpolate it on the fly.
        out_indices: block indices whose outputs are returned, ascending (mmseg ViT-B: ``(3, 5, 7, 11)``).
        final_norm: apply the ViT's final LayerNorm to the last block's output when it is returned (mmseg).
        frozen_stages: -1 freezes nothing; k >= 0 freezes the patch embedding, class/register tokens, position
            embedding and the first k blocks.
        norm_eval: keep BatchNorm layers in eval mode (a ViT has none; accepted for the common contract).
        drop_path_rate: stochastic depth, linear over the blocks (timm).
        with_cp: activation checkpointing of every block (timm ``set_grad_checkpointing``).
        in_chans: input channels ``C``.
        init_values: LayerScale init (``ls1/ls2.gamma``); None = no LayerScale unless the timm model has it
            (DINOv2 does). mmseg's MAE layout needs 0.1.

    Shapes:
        input ``(B, in_chans, H, W)``, any ``H, W``; output one ``(B, D, ceil(H / p), ceil(W / p))`` per entry of
        ``out_indices`` (``D`` = embed dim, ``p`` = patch size; the input is zero-padded right/bottom to ``p``).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        img_size: int | tuple[int, int] | None = None,
        out_indices: tuple[int, ...] = (3, 5, 7, 11),
        final_norm: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        in_chans: int = 3,
        init_values: float | None = None,
    ) -> None:
        super().__init__()
        if not is_timm_vit(model_name):
            raise ValueError(f"{model_name!r} is not a timm ViT (vision_transformer module)")
        pretrained = local_checkpoint(pretrained, model_name)
        if pretrained is not None and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
        kwargs = dict(num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate, dynamic_img_size=True)
        if img_size is not None:
            kwargs["img_size"] = img_size
        if init_values is not None:
            kwargs["init_values"] = init_values
        model = timm.create_model(model_name, pretrained=False, **kwargs)
        depth = len(model.blocks)
        self.out_indices = _check_indices(tuple(out_indices), depth, frozen_stages)
        self.model_name, self.frozen_stages, self.norm_eval = model_name, frozen_stages, norm_eval
        self.final_norm = final_norm and self.out_indices[-1] == depth - 1
        # Blocks after the last wanted one and (without final_norm) the final norm are never run: removed.
        model.prune_intermediate_layers(list(self.out_indices), prune_norm=not self.final_norm, prune_head=True)
        if with_cp:
            model.set_grad_checkpointing(True)
        self.model = model
        self.patch_size = model.patch_embed.patch_size
        self.pretrain_grid = tuple(model.patch_embed.grid_size)
        self.out_channels = [model.embed_dim] * len(self.out_indices)
        self.strides = [self.patch_size[0]] * len(self.out_indices)
        if pretrained is not None:
            load_vit_pretrained(self, pretrained)
        self.freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.model.patch_embed, *self.model.blocks[: self.frozen_stages]]

    def freeze(self) -> None:
        """Stop gradients of the frozen modules and, once anything is frozen, of the tokens and position embedding."""
        super().freeze()
        if self.frozen_stages >= 0:
            for name in ("cls_token", "reg_token", "pos_embed"):
                param = getattr(self.model, name, None)
                if isinstance(param, nn.Parameter):
                    param.requires_grad = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps of the ``out_indices`` blocks.

        Args:
            x: images ``(B, in_chans, H, W)``, any ``H, W``.

        Returns:
            ``[(B, D, ceil(H / p), ceil(W / p))]``, one per ``out_indices`` entry, prefix tokens dropped.
        """
        h, w = x.shape[-2:]
        # Zero-pad right/bottom to whole patches (mmseg's PatchEmbed 'corner' padding): the patchify conv would
        # otherwise drop the last partial row/column and the maps would not be ceil(H / p).
        pad_h, pad_w = -h % self.patch_size[0], -w % self.patch_size[1]
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        feats = self.model.forward_intermediates(x, indices=list(self.out_indices), norm=False, output_fmt="NCHW",
                                                 intermediates_only=True)
        if self.final_norm:  # LayerNorm over channels of the last map only, as mmseg's final_norm
            feats[-1] = self.model.norm(feats[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
        s_h, s_w = self.patch_size
        return [f[..., :output_size(h, s_h), :output_size(w, s_w)] for f in feats]


def _check_indices(out_indices: tuple[int, ...], depth: int, frozen_stages: int) -> tuple[int, ...]:
    """``out_indices`` after checking it is ascending, unique and within the ``depth`` blocks."""
    if not out_indices or list(out_indices) != sorted(set(out_indices)) or not 0 <= out_indices[0] \
            or out_indices[-1] >= depth:
        raise ValueError(f"out_indices must be ascending, unique block indices within 0..{depth - 1}, got "
                         f"{out_indices}")
    if not -1 <= frozen_stages <= depth:
        raise ValueError(f"frozen_stages must be in -1..{depth}, got {frozen_stages}")
    return out_indices


@register_backbone
def vit_s(pretrained: str | None = None, **kwargs) -> ViTBackbone:
    """ViT-S/16 (timm ``vit_small_patch16_224``); keyword arguments are ``ViTBackbone``'s."""
    return ViTBackbone(VIT_PRESETS["vit_s"], pretrained=pretrained, **kwargs)


@register_backbone
def vit_b(pretrained: str | None = None, **kwargs) -> ViTBackbone:
    """ViT-B/16 (timm ``vit_base_patch16_224``): mmseg's ViT-B and MAE-B."""
    return ViTBackbone(VIT_PRESETS["vit_b"], pretrained=pretrained, **kwargs)


@register_backbone
def vit_l(pretrained: str | None = None, **kwargs) -> ViTBackbone:
    """ViT-L/16 (timm ``vit_large_patch16_224``)."""
    return ViTBackbone(VIT_PRESETS["vit_l"], pretrained=pretrained, **kwargs)
