"""The one backbone contract every densekit backbone honours (DESIGN.md §3).

A backbone maps an image batch ``(B, C, H, W)`` of any size to a list of NCHW feature maps,
one per entry of ``out_indices``, and announces their widths and strides up front so that necks
and heads can check themselves at construction (timm ``feature_info``, detectron2 ``ShapeSpec``).
"""
from __future__ import annotations

import os

import torch
from torch import nn

# densekit presets -> the timm model whose released weights they load (for naming the file to fetch).
TIMM_WEIGHTS = {
    "swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224", "swin_l": "swin_large_patch4_window7_224",
    "swinv2_t": "swinv2_tiny_window8_256", "swinv2_s": "swinv2_small_window8_256",
    "swinv2_b": "swinv2_base_window8_256", "swinv2_l": "swinv2_large_window12to16_192to256",
}


def _weights_hint(model_name: str) -> str:
    """Where the released weights of ``model_name`` live, from timm's local table (no network)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(TIMM_WEIGHTS.get(model_name, model_name))
    except Exception:  # not a timm name, or an older timm without this helper
        cfg = None
    if cfg is None or not (cfg.url or cfg.hf_hub_id):
        return "pretrained='/path/to/checkpoint.pth'"
    name = os.path.basename(cfg.url) if cfg.url else "model.safetensors"
    where = cfg.url or f"https://huggingface.co/{cfg.hf_hub_id}"
    return f"pretrained='checkpoints/{name}' (download it yourself from {where})"


def local_checkpoint(pretrained: object, model_name: str) -> str | None:
    """``pretrained`` as a local path, or None for random init (None, False, "").

    ``pretrained=True`` means "download the weights" in timm and torchvision; densekit never downloads
    (no network at run time, no surprise files), so it fails here, naming the file to provide.
    """
    if pretrained is None or pretrained is False or pretrained == "":
        return None
    if isinstance(pretrained, (str, os.PathLike)):
        return os.fspath(pretrained)
    raise ValueError(f"{model_name}: pretrained={pretrained!r} asks for downloaded weights, but densekit never "
                     f"downloads: pass the path of a local checkpoint file, e.g. {_weights_hint(model_name)}")


class Backbone(nn.Module):
    """Base class: subclasses set ``out_channels`` and ``strides`` in ``__init__``.

    Attributes:
        out_channels: channels of each returned map, in ``out_indices`` order.
        strides: stride of each returned map relative to the input (4, 8, 16, 32 for the usual four).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
    """

    out_channels: list[int]
    strides: list[int]
    norm_eval: bool = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _frozen_modules(self) -> list[nn.Module]:
        """Modules kept in eval mode with no gradients (``frozen_stages``); subclasses override."""
        return []

    def freeze(self) -> None:
        """Stop gradients of the frozen modules; called by subclasses at the end of ``__init__``."""
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> Backbone:
        """Switch mode, keeping frozen stages and (with ``norm_eval``) batch norms in eval."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for module in self.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self


def output_size(size: int, stride: int) -> int:
    """Spatial size of a stride-``stride`` map for an input side of ``size`` (ceil, as padding gives)."""
    return -(-size // stride)
