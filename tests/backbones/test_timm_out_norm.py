"""TimmBackbone(out_norm=True): a LayerNorm2d per returned level, named like densekit's Swin out norms."""
from __future__ import annotations

import torch
from timm.layers import LayerNorm2d

from densekit.backbones.timm_backbone import TimmBackbone


def test_out_norms_normalise_each_returned_level():
    plain = TimmBackbone("resnet18", out_indices=(1, 3)).eval()
    normed = TimmBackbone("resnet18", out_indices=(1, 3), out_norm=True).eval()
    assert plain.out_norms is None and not any(k.startswith("out_norms.") for k in plain.state_dict())
    assert list(normed.out_norms) == ["1", "3"]
    assert all(isinstance(m, LayerNorm2d) and m.eps == 1e-6 for m in normed.out_norms.values())
    assert {"out_norms.1.weight", "out_norms.1.bias", "out_norms.3.weight"} <= set(normed.state_dict())
    assert [m.normalized_shape[0] for m in normed.out_norms.values()] == normed.out_channels == [128, 512]

    normed.model.load_state_dict(plain.model.state_dict())
    x = torch.randn(2, 3, 61, 75)
    with torch.no_grad():
        raw, feats = plain(x), normed(x)
        normed.out_norms["3"].weight.mul_(2)
        scaled = normed(x)
    for r, f in zip(raw, feats):
        assert f.shape == r.shape
        expected = (r - r.mean(1, keepdim=True)) / torch.sqrt(r.var(1, unbiased=False, keepdim=True) + 1e-6)
        torch.testing.assert_close(f, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scaled[1], 2 * feats[1])


def test_frozen_stages_freeze_their_out_norms():
    backbone = TimmBackbone("resnet18", frozen_stages=2, out_norm=True).train()
    frozen = {i for i, m in backbone.out_norms.items() if not any(p.requires_grad for p in m.parameters())}
    assert frozen == {"0", "1"}
    assert not backbone.out_norms["0"].training and backbone.out_norms["2"].training
