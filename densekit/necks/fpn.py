"""Feature Pyramid Network (Lin et al. 2017), mmdetection/mmsegmentation ``FPN`` to the last weight.

Submodule names follow mmdet (``lateral_convs.{i}.conv``, ``fpn_convs.{i}.conv``, extra stride-2 convs
appended to ``fpn_convs``), so their checkpoints load by name.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ConvModule, check_channels
from ..registry import MODELS

EXTRA_CONVS = ("on_input", "on_lateral", "on_output")


@MODELS.register_module()
class FPN(nn.Module):
    """1x1 laterals, a top-down upsample-and-add path, 3x3 output convs and optional extra levels.

    Args:
        in_channels: channels of each backbone level, e.g. ``backbone.out_channels``.
        out_channels: width ``C`` of every output level.
        num_outs: number of outputs; those beyond the used backbone levels are extra, coarser levels.
        start_level: first backbone level used (earlier ones are accepted but ignored).
        add_extra_convs: how extra levels are made: False = ``F.max_pool2d(out, 1, stride=2)`` on the
            last output (Faster R-CNN); otherwise a stride-2 3x3 conv on the last backbone input
            (``'on_input'``), the last lateral (``'on_lateral'``) or the last output (``'on_output'``),
            each further level a stride-2 3x3 conv on the previous one (RetinaNet). True means ``'on_input'``.
        relu_before_extra_convs: ReLU before every extra conv after the first.
        norm: ``'BN'``, ``'SyncBN'`` or None for every conv (mmdet's ``norm_cfg``).
        upsample_mode: ``F.interpolate`` mode of the top-down path (to each finer level's size).

    Shapes:
        inputs ``[(B, in_channels[i], H_i, W_i)]``, one per ``in_channels`` entry; outputs ``num_outs``
        maps ``(B, C, H_j, W_j)``: levels ``start_level..`` at their input sizes, then extra levels
        each of size ``ceil(H / 2)`` of the previous.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        add_extra_convs: bool | Literal["on_input", "on_lateral", "on_output"] = False,
        relu_before_extra_convs: bool = False,
        norm: str | None = None,
        upsample_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.start_level = start_level
        if not 0 <= start_level < len(self.in_channels):
            raise ValueError(f"start_level {start_level} must index in_channels {self.in_channels}")
        used = len(self.in_channels) - start_level
        if num_outs < used:
            raise ValueError(f"num_outs {num_outs} < the {used} backbone levels used from start_level {start_level}")
        if add_extra_convs is True:
            add_extra_convs = "on_input"
        if add_extra_convs is not False and add_extra_convs not in EXTRA_CONVS:
            raise ValueError(f"add_extra_convs must be False, True or one of {EXTRA_CONVS}, got {add_extra_convs!r}")
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_mode = upsample_mode

        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm=norm, act=False) for c in self.in_channels[start_level:]
        )
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm=norm, act=False) for _ in range(used)
        )
        if add_extra_convs:
            for i in range(num_outs - used):
                c = self.in_channels[-1] if i == 0 and add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(ConvModule(c, out_channels, 3, stride=2, padding=1, norm=norm, act=False))
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet's ``init_cfg``: Xavier-uniform convs, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Pyramid of ``inputs``.

        Args:
            inputs: ``[(B, in_channels[i], H_i, W_i)]``, finest first.

        Returns:
            ``num_outs`` maps ``(B, out_channels, H_j, W_j)``, finest first.
        """
        check_channels(inputs, self.in_channels, "FPN")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used = len(laterals)
        for i in range(used - 1, 0, -1):
            # Upsample to the finer level's exact size: odd sizes make it not exactly 2x.
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode=self.upsample_mode)
            laterals[i - 1] = laterals[i - 1] + up
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {"on_input": inputs[-1], "on_lateral": laterals[-1], "on_output": outs[-1]}
                outs.append(self.fpn_convs[used](source[self.add_extra_convs]))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
