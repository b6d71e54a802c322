"""ConvModule: mmcv names and bias rule, SyncBN fallback outside distributed runs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from densekit.layers.conv import ConvModule


def test_names_bias_and_forward():
    block = ConvModule(4, 8, 3, padding=1)
    assert set(block.state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                       "bn.num_batches_tracked"}
    assert isinstance(block.activate, nn.ReLU)
    block.eval()
    x = torch.randn(2, 4, 9, 7)
    torch.testing.assert_close(block(x), torch.relu(block.bn(block.conv(x))))


def test_plain_conv_has_bias_and_no_norm_or_act():
    block = ConvModule(4, 8, 3, stride=2, padding=2, dilation=2, norm=None, act=False)
    assert block.bn is None and block.activate is None and block.conv.bias is not None
    assert block(torch.randn(1, 4, 9, 7)).shape == (1, 8, 5, 4)


def test_syncbn_falls_back_to_batchnorm_with_warning():
    assert not torch.distributed.is_initialized()
    with pytest.warns(UserWarning, match="SyncBN"):
        block = ConvModule(4, 8, 1, norm="SyncBN")
    assert type(block.bn) is nn.BatchNorm2d
    assert block(torch.randn(2, 4, 3, 3)).shape == (2, 8, 3, 3)


def test_unknown_norm():
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvModule(4, 8, 1, norm="GN")


def test_syncbn_when_distributed(monkeypatch):
    monkeypatch.setattr("densekit.layers.conv._distributed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="GPU-only"):  # gloo on CPU: DDP would reject SyncBatchNorm
        assert type(ConvModule(4, 8, 1, norm="SyncBN").bn) is nn.BatchNorm2d
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    block = ConvModule(4, 8, 1, norm="SyncBN")
    assert type(block.bn) is nn.SyncBatchNorm
    assert set(block.state_dict()) == set(ConvModule(4, 8, 1).state_dict())  # checkpoints load either way
