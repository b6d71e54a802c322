"""LRASPPHead equals mmsegmentation's LRASPPHead.forward, written here from its definition with functional ops
over the head's own weights (BatchNorm in eval mode, eps 0.001 as mmseg's MobileNetV3 recipe)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.heads import LRASPPHead


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-3)


def mmseg_lraspp(head: LRASPPHead, inputs: list[torch.Tensor]) -> torch.Tensor:
    """mmseg: x = aspp_conv(x) * resize(image_pool(x), align_corners=True); x = conv_up_input(x); for i from the
    last branch down: x = conv_ups[i](cat[resize(x, inputs[i], align_corners=False), convs[i](inputs[i])]);
    cls_seg (dropout, 1x1 conv). ConvModule = conv (no bias) -> BN -> ReLU; the pool gate = conv -> sigmoid."""
    x = inputs[-1]
    aspp = F.relu(_bn(F.conv2d(x, head.aspp_conv.conv.weight), head.aspp_conv.bn))
    pooled = F.avg_pool2d(x, kernel_size=49, stride=(16, 20))
    gate = torch.sigmoid(F.conv2d(pooled, head.image_pool[1].conv.weight))
    x = aspp * F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=True)
    x = F.conv2d(x, head.conv_up_input.weight, head.conv_up_input.bias)
    for i in (1, 0):
        x = F.interpolate(x, size=inputs[i].shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, F.conv2d(inputs[i], getattr(head.convs, f"conv{i}").weight)], 1)
        up = getattr(head.conv_ups, f"conv_up{i}")
        x = F.relu(_bn(F.conv2d(x, up.conv.weight), up.bn))
    return F.conv2d(x, head.conv_seg.weight, head.conv_seg.bias)


@pytest.mark.parametrize("size", [(512, 1024), (520, 776)])
def test_lraspp_equals_mmseg_definition(size):
    torch.manual_seed(0)
    head = LRASPPHead(in_channels=(16, 24, 960), in_index=(0, 1, 2), channels=128, branch_channels=(32, 64),
                      num_classes=19, norm_eps=1e-3).eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
        head.conv_seg.weight.normal_(0, 0.5)
    h, w = size  # mmseg's d8 levels: stride 2 (16 ch), 4 (24 ch), 8 (960 ch)
    feats = [torch.randn(1, c, -(-h // s), -(-w // s)) for c, s in ((16, 2), (24, 4), (960, 8))]
    with torch.no_grad():
        ours = head(feats)
        ref = mmseg_lraspp(head, feats)
    assert ours.shape == (1, 19, -(-h // 2), -(-w // 2))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert {n.split(".")[0] for n, _ in head.named_parameters()} == \
        {"convs", "conv_ups", "conv_up_input", "aspp_conv", "image_pool", "conv_seg"}


def test_lraspp_refuses_bad_input():
    with pytest.raises(ValueError, match="branch_channels"):
        LRASPPHead(in_channels=(16, 960), in_index=(0, 1), branch_channels=(32, 64))
    head = LRASPPHead(in_channels=(24, 40, 960), pool_kernel=49)
    with pytest.raises(ValueError, match="smaller than the image pool kernel 49"):
        head([torch.randn(1, 24, 64, 64), torch.randn(1, 40, 32, 32), torch.randn(1, 960, 8, 8)])
    with pytest.raises(ValueError, match="level 2: expected"):
        head([torch.randn(1, 24, 64, 64), torch.randn(1, 40, 32, 32), torch.randn(1, 96, 64, 64)])
