"""The ViT necks against their reference definitions, written here from mmsegmentation's and detectron2's code:
mmseg ``necks/multilevel_neck.py`` (MultiLevelNeck), ``necks/featurepyramid.py`` (Feature2Pyramid) and detectron2
``modeling/backbone/vit.py`` (SimpleFeaturePyramid, LastLevelMaxPool). Weights are copied by name."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from vit_neck_reference import RefFeature2Pyramid, RefMultiLevelNeck, RefSimpleFeaturePyramid

from densekit.necks import Feature2Pyramid, MultiLevelNeck, SimpleFeaturePyramid


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
