"""mmsegmentation's ConvNeXt UPerNet checkpoints (mmpretrain's ConvNeXt under ``backbone.``) convert into densekit.

The source file is written here from a densekit model with mmpretrain's names, by rules written into the test
(mmpretrain ``ConvNeXt``: ``downsample_layers.0`` = (conv, LN2d), ``downsample_layers.i`` = (LN2d, conv),
``stages.i.j.{depthwise_conv, norm, pointwise_conv1, pointwise_conv2, gamma}``, ``norm{i}`` output norms);
``tools/convert.py SRC DST --config CONFIG`` then gives a file whose logits equal the source model's.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from densekit.apis import build_model, load_config
from densekit.convert import CheckpointError
from densekit.convert.convnext import mmpretrain_convnext_to_timm
from densekit.convert.detect import detect_segmentor_layout
from densekit.inference.checkpoint import load_model_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:norm='SyncBN' outside distributed training")
REPO = Path(__file__).resolve().parents[2]
CONFIG = """
default_scope = "densekit"
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor"),
    backbone=dict(type="convnext_tiny", out_norm=True),
    decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], channels=32, num_classes=5),
    auxiliary_head=dict(type="FCNHead", in_channels=384, in_index=2, channels=16, num_classes=5),
    test_cfg=dict(mode="whole"),
)
"""
# densekit (TimmBackbone) -> mmpretrain ConvNeXt, written out literally.
TO_MMPRETRAIN = [
    (r"^backbone\.model\.stem\.", "backbone.downsample_layers.0."),
    (r"^backbone\.model\.stages\.(\d)\.downsample\.", r"backbone.downsample_layers.\1."),
    (r"^backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"backbone.stages.\1.\2.depthwise_conv."),
    (r"^backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.norm\.", r"backbone.stages.\1.\2.norm."),
    (r"^backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.stages.\1.\2.pointwise_conv1."),
    (r"^backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.stages.\1.\2.pointwise_conv2."),
    (r"^backbone\.model\.stages\.(\d)\.blocks\.(\d+)\.gamma$", r"backbone.stages.\1.\2.gamma"),
    (r"^backbone\.out_norms\.(\d)\.", r"backbone.norm\1."),
]


def to_mmpretrain(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in TO_MMPRETRAIN:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        assert not new.startswith("backbone.model."), key  # every backbone key has a rule
        out[new] = value
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    config = tmp_path_factory.mktemp("cfg") / "upernet_convnext.py"
    config.write_text(CONFIG)
    torch.manual_seed(0)
    model = build_model(load_config(str(config)), pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norms, layer scales and BatchNorm statistics off their initial values
        for name, param in model.named_parameters():
            if name.endswith("gamma") or (param.ndim == 1 and "norm" in name):
                param.copy_(0.5 + 0.5 * torch.rand(param.shape, generator=gen))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen))
    return model, config


def _logits(model: nn.Module, h: int = 96, w: int = 128) -> torch.Tensor:
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x, mode="tensor")


def test_mmseg_convnext_file_converts_through_the_tool(source, tmp_path):
    model, config = source
    mm = to_mmpretrain(model.state_dict())
    assert "backbone.downsample_layers.3.1.weight" in mm and "backbone.stages.2.8.pointwise_conv2.bias" in mm
    assert detect_segmentor_layout(mm) == "mmseg"
    src, dst = tmp_path / "upernet_convnext_mmseg.pth", tmp_path / "converted.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": mm}, src)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), str(src), str(dst), "--config",
                           str(config)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mmpretrain-convnext" in proc.stdout
    fresh = build_model(load_config(str(config)), pretrained=False).eval()
    load_model_checkpoint(fresh, torch.load(dst, map_location="cpu", weights_only=True)["state_dict"])
    torch.testing.assert_close(_logits(fresh), _logits(model), rtol=0, atol=1e-5)


def test_conv_pointwise_layers_and_v2_and_unknown_keys(source):
    model, _ = source
    backbone = {k[len("backbone."):]: v for k, v in to_mmpretrain(model.state_dict()).items()
                if k.startswith("backbone.")}
    as_conv = {k: (v[..., None, None] if re.search(r"pointwise_conv\d\.weight$", k) else v)
               for k, v in backbone.items()}
    converted, report = mmpretrain_convnext_to_timm(as_conv)
    expected = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert report.layout == "mmpretrain-convnext"
    with pytest.raises(CheckpointError, match="ConvNeXt V2"):
        mmpretrain_convnext_to_timm({**backbone, "stages.0.0.grn.gamma": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="stages.0.extra"):
        mmpretrain_convnext_to_timm({**backbone, "stages.0.extra.weight": torch.zeros(1)})
