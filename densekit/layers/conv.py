"""Conv-norm-activation block with mmcv's submodule names, so mmsegmentation/mmdetection weights load by name.

mmcv's ``ConvModule`` names its parts ``conv``, ``bn`` (any batch norm) and ``activate``; every
mmseg/mmdet checkpoint stores ``...conv.weight``, ``...bn.running_mean`` and so on. This block keeps
those names and mmcv's defaults (bias only without a norm, in-place ReLU, Kaiming fan-out init)
without depending on mmcv (DESIGN.md §2).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

NORMS = ("BN", "SyncBN")


def _distributed() -> bool:
    """Whether SyncBatchNorm has peers to synchronise with (an initialised group of size > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def build_norm(norm: str, channels: int) -> nn.Module:
    """A batch norm over ``channels`` for ``norm`` in ``NORMS``.

    ``'SyncBN'`` falls back to ``nn.BatchNorm2d`` with a warning when not running distributed (single-process
    ``SyncBatchNorm`` fails on CPU and synchronises nothing on one GPU) and in distributed CPU runs (gloo),
    where DDP refuses ``SyncBatchNorm``. The two share their state-dict keys,
    so checkpoints load either way (``nn.SyncBatchNorm.convert_sync_batchnorm`` can convert later).
    """
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        if not _distributed():
            warnings.warn("norm='SyncBN' outside distributed training (torch.distributed not initialised or "
                          "world size 1): using nn.BatchNorm2d instead", stacklevel=2)
            return nn.BatchNorm2d(channels)
        if not torch.cuda.is_available():
            # DDP rejects SyncBatchNorm in a CPU module ("SyncBatchNorm layers only work with GPU modules").
            warnings.warn("norm='SyncBN' in a distributed run without CUDA: torch's SyncBatchNorm is GPU-only, "
                          "using nn.BatchNorm2d (statistics per process) instead", stacklevel=2)
            return nn.BatchNorm2d(channels)
        return nn.SyncBatchNorm(channels)
    raise ValueError(f"norm must be one of {NORMS} or None, got {norm!r}")


class ConvModule(nn.Module):
    """Conv2d, then an optional batch norm, then an optional ReLU (mmcv ``ConvModule`` order and names).

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: square kernel side.
        stride: convolution stride.
        padding: zero padding on each side.
        dilation: kernel dilation.
        norm: ``'BN'``, ``'SyncBN'`` (BatchNorm2d outside distributed runs, with a warning) or None.
        act: follow with ``nn.ReLU(inplace=True)``.

    Submodules: ``conv`` (with a bias only when ``norm`` is None), ``bn`` (when ``norm``), ``activate``
    (when ``act``). Shapes: ``(B, C_in, H, W)`` -> ``(B, C_out, H', W')`` with the usual Conv2d arithmetic.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        norm: str | None = "BN",
        act: bool = True,
    ) -> None:
        super().__init__()
        # A bias right before a norm is cancelled by its mean subtraction (mmcv bias='auto').
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, bias=norm is None)
        self.bn = build_norm(norm, out_channels) if norm is not None else None
        self.activate = nn.ReLU(inplace=True) if act else None
        self.init_weights()

    def init_weights(self) -> None:
        """mmcv's default: Kaiming-normal (fan-out, ReLU gain) conv, zero bias, unit norm."""
        nn.init.kaiming_normal_(self.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.bn is not None:
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``. (``densekit.accel.winograd`` runs large 3x3 convolutions
        on the CPU by Winograd's F(2x2, 3x3).)"""
        return self.norm_act(self.conv(x))

    def norm_act(self, x: torch.Tensor) -> torch.Tensor:
        """The norm and activation after the convolution, each when present: ``(B, C_out, H', W')`` -> same."""
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def check_channels(features: Sequence[torch.Tensor], in_channels: Sequence[int], owner: str) -> None:
    """Raise a ValueError naming the first level whose count or channels differ from ``in_channels``.

    Args:
        features: NCHW maps ``[(B, C_i, H_i, W_i)]`` as a backbone returns them.
        in_channels: the ``C_i`` the module was built for.
        owner: the module's name, for the message.
    """
    if len(features) != len(in_channels):
        raise ValueError(f"{owner} was built for {len(in_channels)} input levels (in_channels={list(in_channels)}) "
                         f"but got {len(features)} feature maps")
    for level, (feat, expected) in enumerate(zip(features, in_channels)):
        if feat.dim() != 4 or feat.shape[1] != expected:
            raise ValueError(f"{owner} input level {level}: expected (B, {expected}, H, W) from "
                             f"in_channels={list(in_channels)}, got {tuple(feat.shape)}")
