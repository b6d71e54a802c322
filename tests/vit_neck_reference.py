"""Reference definitions of the ViT necks, written from mmsegmentation's and detectron2's code: mmseg
``necks/multilevel_neck.py`` (MultiLevelNeck), ``necks/featurepyramid.py`` (Feature2Pyramid) and detectron2
``modeling/backbone/vit.py`` (SimpleFeaturePyramid, LastLevelMaxPool). Submodule names are theirs, so a densekit
neck's state dict loads into them strictly."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RefMultiLevelNeck(nn.Module):
    """mmseg MultiLevelNeck with norm_cfg=None, act_cfg=None: ConvModule = a conv (with bias)."""

    def __init__(self, in_channels, out_channels, scales):
        super().__init__()
        self.scales, self.num_outs = scales, len(scales)
        self.lateral_convs = nn.ModuleList(nn.ModuleDict({"conv": nn.Conv2d(c, out_channels, 1)}) for c in in_channels)
        self.convs = nn.ModuleList(nn.ModuleDict({"conv": nn.Conv2d(out_channels, out_channels, 3, padding=1)})
                                   for _ in range(self.num_outs))

    def forward(self, inputs):
        inputs = [lateral_conv["conv"](inputs[i]) for i, lateral_conv in enumerate(self.lateral_convs)]
        if len(inputs) == 1:
            inputs = [inputs[0] for _ in range(self.num_outs)]
        outs = []
        for i in range(self.num_outs):
            x_resize = F.interpolate(inputs[i], scale_factor=self.scales[i], mode="bilinear")  # mmseg resize()
            outs.append(self.convs[i]["conv"](x_resize))
        return tuple(outs)


class RefFeature2Pyramid(nn.Module):
    """mmseg Feature2Pyramid with norm_cfg BN."""

    def __init__(self, embed_dim, rescales):
        super().__init__()
        self.rescales = rescales
        self.upsample_4x = None
        for k in self.rescales:
            if k == 4:
                self.upsample_4x = nn.Sequential(
                    nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2), nn.BatchNorm2d(embed_dim),
                    nn.GELU(), nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
            elif k == 2:
                self.upsample_2x = nn.Sequential(nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2))
            elif k == 1:
                self.identity = nn.Identity()
            elif k == 0.5:
                self.downsample_2x = nn.MaxPool2d(kernel_size=2, stride=2)
            elif k == 0.25:
                self.downsample_4x = nn.MaxPool2d(kernel_size=4, stride=4)

    def forward(self, inputs):
        if self.upsample_4x is not None:
            ops = [self.upsample_4x, self.upsample_2x, self.identity, self.downsample_2x]
        else:
            ops = [self.upsample_2x, self.identity, self.downsample_2x, self.downsample_4x]
        return tuple(ops[i](inputs[i]) for i in range(len(inputs)))


class D2LayerNorm(nn.Module):
    """detectron2's channels-first LayerNorm."""

    def __init__(self, normalized_shape, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class D2Conv2d(nn.Conv2d):
    def __init__(self, *args, norm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x):
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


class RefSimpleFeaturePyramid(nn.Module):
    """detectron2 SimpleFeaturePyramid (norm='LN') over the backbone's last map, with LastLevelMaxPool."""

    def __init__(self, dim, out_channels, scale_factors, top_block):
        super().__init__()
        strides = [int(16 / scale) for scale in scale_factors]
        use_bias = False
        self.stages = []
        for idx, scale in enumerate(scale_factors):
            out_dim = dim
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2), D2LayerNorm(dim // 2), nn.GELU(),
                          nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2)]
                out_dim = dim // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
                out_dim = dim // 2
            elif scale == 1.0:
                layers = []
            elif scale == 0.5:
                layers = [nn.MaxPool2d(kernel_size=2, stride=2)]
            layers.extend([
                D2Conv2d(out_dim, out_channels, kernel_size=1, bias=use_bias, norm=D2LayerNorm(out_channels)),
                D2Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias,
                         norm=D2LayerNorm(out_channels)),
            ])
            stage = int(math.log2(strides[idx]))
            self.add_module(f"simfp_{stage}", nn.Sequential(*layers))
            self.stages.append(getattr(self, f"simfp_{stage}"))
        self.top_block = top_block

    def forward(self, features):
        results = [stage(features) for stage in self.stages]
        if self.top_block:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return results
