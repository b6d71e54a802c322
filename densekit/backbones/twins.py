"""mmsegmentation's Twins-SVT (``SVT``, ``norm_after_stage=True``) on timm's Twins modules.

timm's ``Twins`` has the same blocks, position generator and patch embeddings as mmseg's SVT, but runs a
different architecture in three ways, so mmseg's checkpoints would not reproduce mmseg's outputs in it:

- ``norm_after_stage``: mmseg normalises every stage's tokens with a LayerNorm (``norm_list.i``) INSIDE the
  stream, so stage ``i + 1`` reads the normalised map; timm has no such norms.
- LayerNorm eps: mmseg's (mmcv ``LN``) are 1e-5 everywhere; timm's block norms use 1e-6.
- Locally-grouped attention on a grid that is not a window multiple: both pad right/bottom with zeros, but mmseg
  adds a -1000 attention mask between real and padded positions (and, as written, only when both the bottom and the
  right are padded: ``mask[:, -0:]`` fills the whole mask when one side needs no padding, which cancels it);
  timm attends to the zeros. ``MaskedLocallyGroupedAttn`` is mmseg's arithmetic on timm's parameters.

mmseg also pads each stage's input to its patch size (``PatchEmbed(padding='corner')``) instead of padding the image
once, which this class does too. ``TwinsSVT`` therefore runs timm's stages itself, as timm's
``forward_intermediates`` does, with these differences; the parameter names stay timm's (``model.*``) plus
``norm_list.{i}``, and mmseg's key layout converts through ``densekit.convert.twins``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.twins import LocallyGroupedAttn
from torch import nn

from ..registry import register_backbone
from .base import local_checkpoint
from .pretrained import load_twins_pretrained
from .timm_backbone import TimmBackbone

MMSEG_LN_EPS = 1e-5  # mmcv's build_norm_layer(dict(type='LN')) is a plain nn.LayerNorm


class MaskedLocallyGroupedAttn(LocallyGroupedAttn):
    """timm's LSA (same ``qkv``/``proj`` parameters) with mmseg's padded-window mask.

    Shapes: ``x`` ``(B, H * W, C)`` and ``size = (H, W)`` -> ``(B, H * W, C)``.
    """

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = size
        ws = self.ws
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1:3]
        gh, gw = hp // ws, wp // ws
        # mmseg's mask, its slicing kept: with pad 0, ``-0:`` selects every row/column (see the module docstring).
        mask = torch.zeros((1, hp, wp), device=x.device, dtype=x.dtype)
        mask[:, -pad_b:, :] = 1
        mask[:, :, -pad_r:] = 1
        mask = mask.reshape(1, gh, ws, gw, ws).transpose(2, 3).reshape(1, gh * gw, ws * ws)
        attn_mask = mask.unsqueeze(2) - mask.unsqueeze(3)
        attn_mask = torch.where(attn_mask != 0, -1000.0, 0.0).to(x.dtype)  # (1, groups, ws*ws, ws*ws)
        x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)
        qkv = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # (B, groups, heads, ws*ws, head_dim)
        attn = (q @ k.transpose(-2, -1)) * self.scale + attn_mask.unsqueeze(2)
        x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(2, 3).reshape(b, gh, gw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        x = x[:, :h, :w, :].reshape(b, n, c)
        return self.proj_drop(self.proj(x))


def _to_mmseg_attention(model: nn.Module) -> None:
    """Swap every timm LSA in ``model`` for ``MaskedLocallyGroupedAttn`` with the same parameters, and set every
    LayerNorm's eps to mmseg's."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is LocallyGroupedAttn:
                masked = MaskedLocallyGroupedAttn(child.dim, child.num_heads, child.attn_drop.p, child.proj_drop.p,
                                                  child.ws)
                masked.load_state_dict(child.state_dict())
                setattr(module, name, masked)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = MMSEG_LN_EPS


class TwinsSVT(TimmBackbone):
    """mmseg's ``SVT`` backbone on a timm Twins-SVT (``twins_svt_small/base/large``), four maps at strides 4..32.

    Args:
        model_name: a timm Twins-SVT (``twins_svt_small``, ...).
        norm_after_stage: mmseg's option: a LayerNorm (``norm_list.{i}``, eps 1e-5) on every stage's tokens inside
            the stream (True in all of mmseg's SVT recipes); False runs timm's stream with mmseg's eps and mask.
        **kwargs: ``pretrained`` (a local file in mmseg's Twins layout, e.g. its ImageNet ``alt_gvt_small``, or
            timm's; ``backbones.pretrained.load_twins_pretrained``) and ``TimmBackbone``'s (``out_indices``,
            ``frozen_stages``, ``drop_path_rate``, ...) except ``out_norm``, which ``norm_after_stage`` replaces,
            and ``with_cp``, refused.

    Shapes:
        input ``(B, 3, H, W)``, any ``H, W``; output ``[(B, C_i, ceil(H / s_i), ceil(W / s_i))]`` per ``out_indices``.
    """

    def __init__(self, model_name: str = "twins_svt_small", norm_after_stage: bool = True, **kwargs) -> None:
        if kwargs.get("out_norm"):
            raise ValueError("TwinsSVT: out_norm is not read; norm_after_stage normalises every stage (mmseg's SVT)")
        kwargs.pop("out_norm", None)
        if kwargs.get("with_cp"):  # the stream below is run here, not by timm, so its checkpointing would not apply
            raise ValueError("TwinsSVT: with_cp is not supported")
        if "twins_svt" not in model_name:
            raise ValueError(f"TwinsSVT: {model_name!r} is not a timm Twins-SVT (twins_svt_small/base/large)")
        # Loaded here, not by timm: mmseg's layout (its ImageNet alt_gvt files) converts through convert.twins.
        pretrained = local_checkpoint(kwargs.pop("pretrained", None), model_name)
        super().__init__(model_name, **kwargs)
        _to_mmseg_attention(self.model)
        self.norm_after_stage = norm_after_stage
        dims = list(self.model.embed_dims)
        self.norm_list = nn.ModuleList(nn.LayerNorm(d, eps=MMSEG_LN_EPS) for d in dims) if norm_after_stage else None
        if pretrained is not None:
            load_twins_pretrained(self, pretrained)
        self.freeze()  # again: a frozen stage's norm_list entry is frozen with it

    def _frozen_modules(self) -> list[nn.Module]:
        norms = getattr(self, "norm_list", None)  # TimmBackbone.__init__ freezes before norm_list exists
        return super()._frozen_modules() + (list(norms[: max(self.frozen_stages, 0)]) if norms is not None else [])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of ``x`` ``(B, 3, H, W)``: ``[(B, C_i, ceil(H / s_i), ceil(W / s_i))]``, NCHW."""
        m = self.model
        feats = []
        for i, (embed, drop, blocks, pos) in enumerate(zip(m.patch_embeds, m.pos_drops, m.blocks, m.pos_block)):
            p = embed.patch_size
            x = F.pad(x, (0, -x.shape[-1] % p[1], 0, -x.shape[-2] % p[0]))  # mmseg's 'corner' padding per stage
            x, size = embed(x)
            x = drop(x)
            for j, block in enumerate(blocks):
                x = block(x, size)
                if j == 0:
                    x = pos(x, size)  # the position generator after the first block, as timm and mmseg do
            if self.norm_list is not None:
                x = self.norm_list[i](x)
            x = x.reshape(x.shape[0], *size, -1).permute(0, 3, 1, 2).contiguous()
            if i in self.out_indices:
                feats.append(x)
            if i == self.out_indices[-1]:
                break
        return feats


@register_backbone
def twins_svt_s(pretrained: str | None = None, **kwargs) -> TwinsSVT:
    """mmseg's SVT-S (timm ``twins_svt_small``: dims 64/128/256/512, depths 2/2/10/4, heads 2/4/8/16, window 7)."""
    return TwinsSVT("twins_svt_small", pretrained=pretrained, **kwargs)


@register_backbone
def twins_svt_b(pretrained: str | None = None, **kwargs) -> TwinsSVT:
    """mmseg's SVT-B (timm ``twins_svt_base``)."""
    return TwinsSVT("twins_svt_base", pretrained=pretrained, **kwargs)


@register_backbone
def twins_svt_l(pretrained: str | None = None, **kwargs) -> TwinsSVT:
    """mmseg's SVT-L (timm ``twins_svt_large``)."""
    return TwinsSVT("twins_svt_large", pretrained=pretrained, **kwargs)
