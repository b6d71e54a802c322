"""mmsegmentation's Twins-SVT checkpoints convert into densekit's ``TwinsSVT`` and run mmseg's architecture exactly.

``RefSVT`` below is mmseg's ``SVT`` (mmseg/models/backbones/twins.py, with ``norm_after_stage=True``) written from
its definition with its parameter names, so its random state dict IS a file in mmseg's layout:
``patch_embeds.i.{projection,norm}`` (corner padding to the patch size), ``layers.i.j`` (even j: locally-grouped
attention ``attn.{qkv,proj}`` with mmseg's -1000 mask between real and padded positions; odd j: global sub-sampled
attention, an ``nn.MultiheadAttention`` ``attn.attn`` after ``attn.sr`` + ``attn.norm``), ``ffn.layers.{0.0,1}``,
``position_encodings.i.proj`` after each stage's first block, ``norm_list.i`` on every stage's tokens, LayerNorm
eps 1e-5. densekit's model must give its outputs within 1e-5, at 64x64 and at an odd 61x83.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import densekit
from densekit.apis import build_model, load_config
from densekit.convert import CheckpointError
from densekit.convert.detect import detect_segmentor_layout
from densekit.convert.twins import mmseg_twins_to_densekit
from densekit.inference.checkpoint import load_model_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:norm='SyncBN' outside distributed training")
REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "upernet_twins_svt_s_ade.py"
DIMS, HEADS, DEPTHS, SR, WINDOW = (64, 128, 256, 512), (2, 4, 8, 16), (2, 2, 10, 4), (8, 4, 2, 1), 7


class RefLSA(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        ws = WINDOW
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = x.shape[1:3]
        gh, gw = hp // ws, wp // ws
        mask = torch.zeros((1, hp, wp))
        mask[:, -pad_b:, :].fill_(1)
        mask[:, :, -pad_r:].fill_(1)
        x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)
        mask = mask.reshape(1, gh, ws, gw, ws).transpose(2, 3).reshape(1, gh * gw, ws * ws)
        attn_mask = mask.unsqueeze(2) - mask.unsqueeze(3)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, -1000.0).masked_fill(attn_mask == 0, 0.0)
        qkv = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5 + attn_mask.unsqueeze(2)
        x = (attn.softmax(-1) @ v).transpose(2, 3).reshape(b, gh, gw, ws, ws, c)
        x = x.transpose(2, 3).reshape(b, gh * ws, gw * ws, c)[:, :h, :w, :]
        return self.proj(x.reshape(b, n, c))


class RefGSA(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        if sr > 1:
            self.sr, self.norm = nn.Conv2d(dim, dim, sr, sr), nn.LayerNorm(dim)
        self.sr_ratio = sr

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        kv = x
        if self.sr_ratio > 1:
            kv = self.norm(self.sr(x.transpose(1, 2).reshape(x.shape[0], -1, h, w)).flatten(2).transpose(1, 2))
        return self.attn(x, kv, kv, need_weights=False)[0]


class RefLayer(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, local: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RefLSA(dim, heads) if local else RefGSA(dim, heads, sr)
        self.ffn = nn.Module()
        self.ffn.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU()), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.ffn.layers(self.norm2(x))


class RefSVT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embeds = nn.ModuleList()
        for i, dim in enumerate(DIMS):
            embed = nn.Module()
            p = 4 if i == 0 else 2
            embed.projection = nn.Conv2d(3 if i == 0 else DIMS[i - 1], dim, p, p)
            embed.norm = nn.LayerNorm(dim)
            self.patch_embeds.append(embed)
        self.position_encodings = nn.ModuleList()
        for dim in DIMS:
            cpe = nn.Module()
            cpe.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
            self.position_encodings.append(cpe)
        self.layers = nn.ModuleList(nn.ModuleList(RefLayer(DIMS[i], HEADS[i], SR[i], j % 2 == 0)
                                                  for j in range(DEPTHS[i])) for i in range(4))
        self.norm_list = nn.ModuleList(nn.LayerNorm(dim) for dim in DIMS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(4):
            embed = self.patch_embeds[i]
            p = embed.projection.stride[0]
            x = F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))  # mmseg PatchEmbed(padding='corner')
            x = embed.projection(x)
            h, w = x.shape[-2:]
            x = embed.norm(x.flatten(2).transpose(1, 2))
            for j, layer in enumerate(self.layers[i]):
                x = layer(x, h, w)
                if j == 0:
                    feat = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
                    x = (self.position_encodings[i].proj(feat) + feat).flatten(2).transpose(1, 2)
            x = self.norm_list[i](x)
            x = x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


@pytest.fixture(scope="module")
def reference() -> RefSVT:
    torch.manual_seed(0)
    ref = RefSVT().eval()
    with torch.no_grad():  # norms off their unit init, so eps and placement matter
        for name, param in ref.named_parameters():
            if param.ndim == 1:
                param.copy_(0.5 + torch.rand_like(param) if "norm" in name and name.endswith("weight")
                            else 0.1 * torch.randn_like(param))
    return ref


def _converted_backbone(reference: RefSVT) -> nn.Module:
    converted, report = mmseg_twins_to_densekit(reference.state_dict())
    assert report.layout == "mmseg-twins"
    model = densekit.create_backbone("twins_svt_s", drop_path_rate=0.0).eval()
    assert model.load_state_dict(converted, strict=True)
    return model


@pytest.mark.parametrize("size", [(64, 64), (61, 83)])
def test_mmseg_svt_file_gives_mmsegs_outputs(reference, size):
    model = _converted_backbone(reference)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), reference(x)
    assert [tuple(f.shape) for f in got] == [tuple(f.shape) for f in want]
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-5)


def test_pretrained_reads_mmsegs_imagenet_layout_and_timms(reference, tmp_path):
    # mmseg's ImageNet alt_gvt files: the SVT keys plus the classifier's head and final norm (dropped, reported).
    mm = {**reference.state_dict(), "head.weight": torch.zeros(1000, 512), "head.bias": torch.zeros(1000),
          "norm.weight": torch.ones(512), "norm.bias": torch.zeros(512)}
    torch.save({"state_dict": mm}, tmp_path / "alt_gvt_small.pth")
    model = densekit.create_backbone("twins_svt_s", pretrained=str(tmp_path / "alt_gvt_small.pth")).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for g, r in zip(model(x), reference(x)):
            torch.testing.assert_close(g, r, rtol=0, atol=1e-5)
    # timm's layout: moved under model.; no norm_list in an ImageNet file, so those stay at unit init.
    timm_sd = {k[len("model."):]: v + 0.01 for k, v in model.state_dict().items() if k.startswith("model.")}
    torch.save(timm_sd, tmp_path / "twins_svt_small.pth")
    other = densekit.create_backbone("twins_svt_s", pretrained=str(tmp_path / "twins_svt_small.pth"))
    assert torch.equal(other.model.blocks[2][3].attn.kv.weight, timm_sd["blocks.2.3.attn.kv.weight"])
    assert torch.equal(other.norm_list[1].weight, torch.ones(128))


def test_timm_stream_without_mmsegs_norms_differs(reference):
    # The agreement above is not trivial: without the in-stream stage norms the outputs move.
    model = _converted_backbone(reference)
    model.norm_list = None
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(x)[3] - reference(x)[3]).abs().max() > 1e-2


def test_unknown_keys_and_pcpvt_are_refused(reference):
    sd = reference.state_dict()
    with pytest.raises(CheckpointError, match="layers.0.0.extra"):
        mmseg_twins_to_densekit({**sd, "layers.0.0.extra.weight": torch.zeros(1)})
    pcpvt = {k: v for k, v in sd.items() if ".attn.qkv." not in k}
    with pytest.raises(CheckpointError, match="PCPVT"):
        mmseg_twins_to_densekit(pcpvt)


def test_whole_upernet_converts_through_the_tool_with_the_config(reference, tmp_path):
    cfg = load_config(str(CONFIG))
    assert cfg.model.backbone.type == "twins_svt_s" and cfg.model.backbone.norm_after_stage is True
    model = build_model(cfg, pretrained=False).eval()
    converted, _ = mmseg_twins_to_densekit(reference.state_dict())
    model.backbone.load_state_dict(converted, strict=True)
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    mm = {**{"backbone." + k: v for k, v in reference.state_dict().items()}, **heads}
    assert detect_segmentor_layout(mm) == "mmseg"
    src, dst = tmp_path / "twins_svt-s_uperhead_mmseg.pth", tmp_path / "converted.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": mm}, src)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), str(src), str(dst), "--config",
                           str(CONFIG)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mmseg-twins" in proc.stdout
    fresh = build_model(cfg, pretrained=False).eval()
    load_model_checkpoint(fresh, torch.load(dst, map_location="cpu", weights_only=True)["state_dict"])
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for g, r in zip(fresh.backbone(x), reference(x)):
            torch.testing.assert_close(g, r, rtol=0, atol=1e-5)
        torch.testing.assert_close(fresh(x, mode="tensor"), model(x, mode="tensor"), rtol=0, atol=1e-5)
