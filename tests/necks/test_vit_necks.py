"""The ViT necks against their reference definitions, written here from mmsegmentation's and detectron2's code:
mmseg ``necks/multilevel_neck.py`` (MultiLevelNeck), ``necks/featurepyramid.py`` (Feature2Pyramid) and detectron2
``modeling/backbone/vit.py`` (SimpleFeaturePyramid, LastLevelMaxPool). Weights are copied by name."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.necks import Feature2Pyramid, MultiLevelNeck, SimpleFeaturePyramid


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


def _copy(ours: nn.Module, ref: nn.Module) -> None:
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.1)
        for name, b in ours.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same names: mmseg/detectron2 checkpoints load


@pytest.mark.parametrize("size", [(32, 32), (31, 23)])
def test_multi_level_neck_equals_mmseg(size):
    ours = MultiLevelNeck([32] * 4, 24, scales=(4, 2, 1, 0.5)).eval()
    ref = RefMultiLevelNeck([32] * 4, 24, [4, 2, 1, 0.5]).eval()
    _copy(ours, ref)
    x = [torch.randn(2, 32, *size) for _ in range(4)]
    got, expected = ours(x), ref(x)
    assert [o.shape[-1] for o in got] == [size[1] * 4, size[1] * 2, size[1], size[1] // 2]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    single = MultiLevelNeck([32], 24, scales=(0.5, 1, 2, 4)).eval()
    ref_single = RefMultiLevelNeck([32], 24, [0.5, 1, 2, 4]).eval()
    _copy(single, ref_single)
    for a, b in zip(single(x[:1]), ref_single(x[:1])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rescales", [(4, 2, 1, 0.5), (2, 1, 0.5, 0.25)])
def test_feature2pyramid_equals_mmseg(rescales):
    ours = Feature2Pyramid(16, rescales, norm="BN").eval()
    ref = RefFeature2Pyramid(16, list(rescales)).eval()
    _copy(ours, ref)
    x = [torch.randn(2, 16, 12, 9) for _ in range(4)]
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert ours.num_outs == 4 and ours.out_channels == 16


@pytest.mark.parametrize("top_block", [False, True])
def test_simple_feature_pyramid_equals_detectron2(top_block):
    ours = SimpleFeaturePyramid([32, 32], 24, norm="LN", top_block=top_block).eval()
    ref = RefSimpleFeaturePyramid(32, 24, (4.0, 2.0, 1.0, 0.5), top_block).eval()
    _copy(ours, ref)
    last = torch.randn(2, 32, 10, 7)
    got = ours([torch.randn(2, 32, 10, 7), last])  # only the last map is used
    expected = ref(last)
    assert len(got) == ours.num_outs == 4 + top_block
    assert ours.strides == [4, 8, 16, 32] + ([64] if top_block else [])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_necks_refuse_bad_arguments_by_name():
    with pytest.raises(ValueError, match="MultiLevelNeck"):
        MultiLevelNeck([8, 8], 8, scales=(4, 2, 1))
    with pytest.raises(ValueError, match="rescales"):
        Feature2Pyramid(8, (3, 1))
    with pytest.raises(ValueError, match="scale_factors"):
        SimpleFeaturePyramid([8], 8, scale_factors=(8.0,))
    with pytest.raises(ValueError, match="Feature2Pyramid"):
        Feature2Pyramid(8, norm="BN")([torch.zeros(1, 4, 2, 2)] * 4)
