"""FPN: mmdet behaviour (shapes, max-pool and conv extra levels, names), input checks, registry."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densekit.necks import FPN
from densekit.registry import MODELS

IN_CHANNELS = [16, 32, 64, 128]


def _inputs(size=(64, 48), batch=2, channels=IN_CHANNELS) -> list[torch.Tensor]:
    h, w = size
    return [torch.randn(batch, c, -(-h // s), -(-w // s)) for c, s in zip(channels, (4, 8, 16, 32))]


def test_four_levels_shapes_and_names():
    fpn = FPN(IN_CHANNELS, 8, num_outs=4)
    outs = fpn(_inputs())
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 12), (2, 8, 8, 6), (2, 8, 4, 3), (2, 8, 2, 2)]
    keys = set(fpn.state_dict())
    assert {"lateral_convs.3.conv.weight", "lateral_convs.3.conv.bias", "fpn_convs.3.conv.weight"} <= keys
    assert len(fpn.fpn_convs) == 4


def test_top_down_path_is_nearest_upsample_add():
    fpn = FPN(IN_CHANNELS, 8, num_outs=4)
    x = _inputs(size=(61, 45))  # odd sizes: the top-down path upsamples to each finer level's exact size
    outs = fpn(x)
    lat = [conv(t) for conv, t in zip(fpn.lateral_convs, x)]
    for i in (3, 2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    for conv, out, ref in zip(fpn.fpn_convs, outs, lat):
        torch.testing.assert_close(out, conv(ref))


def test_extra_level_by_max_pool():
    fpn = FPN(IN_CHANNELS, 8, num_outs=5)
    outs = fpn(_inputs(size=(200, 200)))  # P5 is 7x7: P6 = max_pool2d(P5, 1, stride=2) is 4x4
    assert len(outs) == 5 and len(fpn.fpn_convs) == 4
    assert outs[4].shape == (2, 8, 4, 4)
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])


@pytest.mark.parametrize("mode", ["on_input", "on_lateral", "on_output", True])
def test_extra_levels_by_conv(mode):
    fpn = FPN(IN_CHANNELS, 8, num_outs=6, add_extra_convs=mode, relu_before_extra_convs=True)
    x = _inputs()
    outs = fpn(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1), (1, 1)]
    expected_in = 128 if mode in ("on_input", True) else 8
    assert fpn.fpn_convs[4].conv.in_channels == expected_in and fpn.fpn_convs[4].conv.stride == (2, 2)
    assert fpn.fpn_convs[5].conv.in_channels == 8
    torch.testing.assert_close(outs[5], fpn.fpn_convs[5](F.relu(outs[4])))
    if mode == "on_input":
        torch.testing.assert_close(outs[4], fpn.fpn_convs[4](x[-1]))


def test_start_level_and_norm():
    fpn = FPN(IN_CHANNELS, 8, num_outs=3, start_level=1, norm="BN")
    outs = fpn(_inputs())
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 6), (4, 3), (2, 2)]
    assert len(fpn.lateral_convs) == 3 and fpn.lateral_convs[0].conv.in_channels == 32
    assert fpn.lateral_convs[0].conv.bias is None and fpn.lateral_convs[0].bn is not None


def test_channel_mismatch_names_the_level():
    fpn = FPN(IN_CHANNELS, 8, num_outs=4)
    with pytest.raises(ValueError, match=r"FPN input level 1: expected \(B, 32, H, W\).*got \(2, 24, 8, 6\)"):
        fpn(_inputs(channels=[16, 24, 64, 128]))
    with pytest.raises(ValueError, match="built for 4 input levels.*got 3"):
        fpn(_inputs()[:3])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_outs"):
        FPN(IN_CHANNELS, 8, num_outs=3)
    with pytest.raises(ValueError, match="add_extra_convs"):
        FPN(IN_CHANNELS, 8, num_outs=5, add_extra_convs="on_top")


def test_builds_from_registry_and_backward():
    fpn = MODELS.build(dict(type="FPN", in_channels=IN_CHANNELS, out_channels=8, num_outs=5))
    assert isinstance(fpn, FPN)
    sum(o.mean() for o in fpn(_inputs())).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fpn.parameters())
