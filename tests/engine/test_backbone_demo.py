"""The quickstart demo runs offline and reports what it promises."""
from __future__ import annotations

import torch

from densekit.engine.demo import demo_image, run_backbone_demo


def test_demo_image_is_deterministic_and_normalised():
    a, b = demo_image(64, 48), demo_image(64, 48)
    assert a.shape == (1, 3, 64, 48) and torch.equal(a, b)
    assert a.abs().max() < 5


def test_backbone_demo_prints_shapes(capsys):
    rows = run_backbone_demo(("swin_t", "resnet18"), size=(96, 64), runs=1)
    assert [r["name"] for r in rows] == ["swin_t", "resnet18"]
    assert rows[0]["shapes"][0] == (1, 96, 24, 16) and rows[0]["strides"] == [4, 8, 16, 32]
    assert rows[1]["shapes"][-1] == (1, 512, 3, 2)
    assert all(r["ms"] > 0 for r in rows)
    assert "swin_t" in capsys.readouterr().out
