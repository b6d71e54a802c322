"""ViT checkpoints in the layouts people have (official MAE, DINO, DINOv2, timm, mmseg) -> densekit's ViTBackbone.

Each file is written here from a random timm ViT, renamed to the source layout by literal key rules, and densekit's
maps are compared with timm's ``forward_intermediates(norm=False)`` on the original weights.
"""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from helpers.paths import scratch_dir
from vit_checkpoints import mmseg_mae, mmseg_vit

from densekit.backbones import create_backbone
from densekit.backbones.pretrained import load_vit_pretrained
from densekit.cli.convert import main as convert_main
from densekit.convert.report import CheckpointError
from densekit.convert.resize import resize_vit_pos_embed
from densekit.convert.vit import detect_vit_layout


def _random_timm(name: str, **kwargs) -> torch.nn.Module:
    """A timm ViT with random weights everywhere, LayerScale included (timm starts it at ~1e-5)."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs).eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith(("gamma", "pos_embed", "cls_token", "reg_token")) or key.endswith("bias"):
                param.normal_(0, 0.5 if key.endswith("gamma") else 0.02)
    return model


def _maps(model: torch.nn.Module, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.forward_intermediates(x, indices=indices, norm=False, intermediates_only=True)


def _assert_maps(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def mae_interpolate_pos_embed(pos_embed_checkpoint: torch.Tensor, num_patches: int, num_extra_tokens: int):
    """MAE's util/pos_embed.py ``interpolate_pos_embed``, as published (square grids)."""
    embedding_size = pos_embed_checkpoint.shape[-1]
    orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
    new_size = int(num_patches ** 0.5)
    extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
    pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
    pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic", align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat((extra_tokens, pos_tokens), dim=1)


def official_mae(state_dict: dict) -> dict:
    """timm ViT keys -> an official MAE pretraining checkpoint: the encoder keys are timm's; MAE adds its decoder
    and mask token and saves ``{'model': ...}``."""
    dim = 64
    out = dict(state_dict)
    out["mask_token"] = torch.zeros(1, 1, dim)
    out["decoder_embed.weight"] = torch.randn(dim, state_dict["cls_token"].shape[-1])
    out["decoder_pos_embed"] = torch.randn(1, state_dict["pos_embed"].shape[1], dim)
    out["decoder_blocks.0.norm1.weight"] = torch.ones(dim)
    out["decoder_norm.weight"] = torch.ones(dim)
    out["decoder_pred.weight"] = torch.randn(16 * 16 * 3, dim)
    return {"model": out}


# ------------------------------------------------------------------------------------- acceptance: MAE
@pytest.fixture(scope="module")
def mae_file(request):
    ref = _random_timm("vit_base_patch16_224")
    path = scratch_dir(request, "mae") / "mae_pretrain_vit_base.pth"
    torch.save(official_mae(ref.state_dict()), path)
    return path, ref


def test_official_mae_at_224(mae_file):
    path, ref = mae_file
    model = create_backbone("vit_base_patch16_224", pretrained=str(path)).eval()
    report = load_vit_pretrained(model, path, verbose=False)
    assert report.layout == "mae"
    dropped = dict(report.dropped)
    assert "mask_token" in dropped and "decoder_pred.weight" in dropped and "decoder_pos_embed" in dropped
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = model(x)
    _assert_maps(got, _maps(ref, x, [3, 5, 7, 11]))


def test_official_mae_at_512_resizes_pos_embed_as_mae(mae_file):
    path, ref = mae_file
    model = create_backbone("vit_base_patch16_224", img_size=512, pretrained=str(path)).eval()
    report = load_vit_pretrained(model, path, verbose=False)
    assert ("model.pos_embed", (1, 197, 768), (1, 1025, 768)) in report.resized
    ref512 = timm.create_model("vit_base_patch16_224", img_size=512, num_classes=0).eval()
    weights = dict(ref.state_dict())
    weights["pos_embed"] = mae_interpolate_pos_embed(weights["pos_embed"], 32 * 32, 1)
    ref512.load_state_dict(weights)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        got = model(x)
    _assert_maps(got, _maps(ref512, x, [3, 5, 7, 11]))


# ---------------------------------------------------------------------------------- acceptance: DINOv2
def test_official_dinov2_vit_s14_at_518(tmp_path):
    ref = _random_timm("vit_small_patch14_dinov2")  # img_size 518, LayerScale ls1/ls2.gamma
    official = dict(ref.state_dict())
    official["mask_token"] = torch.zeros(1, 384)  # DINOv2's: (1, C)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)  # a bare state dict, as released
    model = create_backbone("vit_small_patch14_dinov2", pretrained=str(path), out_indices=(2, 5, 8, 11)).eval()
    report = load_vit_pretrained(model, path, verbose=False)
    assert report.layout == "dinov2" and ("mask_token", "mask token, used only in pretraining") in report.dropped
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        got = model(x)
    _assert_maps(got, _maps(ref, x, [2, 5, 8, 11]))


def test_official_dinov2_with_registers(tmp_path):
    ref = _random_timm("vit_small_patch14_reg4_dinov2", img_size=112)
    sd = ref.state_dict()
    # Official DINOv2 keeps a class slot in pos_embed and adds it to the class token; the registers get none.
    pos_cls = torch.randn(1, 1, 384) * 0.02
    official = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    official.update(register_tokens=sd["reg_token"], cls_token=sd["cls_token"] - pos_cls,
                    pos_embed=torch.cat([pos_cls, sd["pos_embed"]], dim=1), mask_token=torch.zeros(1, 384))
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(official, path)
    model = create_backbone("vit_small_patch14_reg4_dinov2", img_size=112, pretrained=str(path),
                            out_indices=(3, 11)).eval()
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        got = model(x)
    _assert_maps(got, _maps(ref, x, [3, 11]))


# ----------------------------------------------------------------------------------------- mmseg layouts
def test_mmseg_vision_transformer(tmp_path):
    ref = _random_timm("vit_small_patch16_224")
    path = tmp_path / "vit_mmseg.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in mmseg_vit(ref.state_dict()).items()}}, path)
    model = create_backbone("vit_s", pretrained=str(path), out_indices=(3, 11), final_norm=True).eval()
    assert load_vit_pretrained(model, path, verbose=False).layout == "mmseg"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = model(x)
        expected = ref.forward_intermediates(x, indices=[3, 11], norm=True, intermediates_only=True)
    torch.testing.assert_close(got[1], expected[1], atol=1e-4, rtol=0)  # mmseg's ln1 = timm's final norm
    _assert_maps(got[:1], _maps(ref, x, [3]))


def test_mmseg_mae_layout_and_learned_bias_refused(tmp_path):
    ref = _random_timm("vit_small_patch16_224", init_values=0.1, qkv_bias=False)
    path = tmp_path / "mae_mmseg.pth"
    torch.save(mmseg_mae(ref.state_dict(), torch.zeros(732, 6)), path)
    model = create_backbone("vit_s", pretrained=str(path), init_values=0.1, out_indices=(5, 11)).eval()
    report = load_vit_pretrained(model, path, verbose=False)
    assert report.layout == "mmseg_mae"
    assert any(key.endswith("qkv.bias") and "zeros" in why for key, why in report.missing)
    assert not report.missing_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model(x)
    _assert_maps(got, _maps(ref, x, [5, 11]))
    torch.save(mmseg_mae(ref.state_dict(), torch.ones(732, 6)), path)
    with pytest.raises(CheckpointError, match="relative position bias"):
        create_backbone("vit_s", pretrained=str(path), init_values=0.1)


def test_dino_head_dropped_and_layouts_detected():
    ref = _random_timm("vit_small_patch16_224")
    sd = dict(ref.state_dict())
    assert detect_vit_layout(sd) == "timm"
    sd["head.mlp.0.weight"] = torch.zeros(8, 384)
    sd["head.last_layer.weight_g"] = torch.zeros(8, 1)
    assert detect_vit_layout(sd) == "dino"
    assert detect_vit_layout({"model." + k: v for k, v in ref.state_dict().items()}) == "densekit"
    with pytest.raises(CheckpointError, match="not a plain ViT"):
        detect_vit_layout({"layers.0.blocks.0.attn.qkv.weight": torch.zeros(3, 1)})


def test_pos_embed_resize_keeps_class_slot_and_handles_no_class_slot():
    embed = torch.randn(1, 1 + 14 * 14, 8)
    out = resize_vit_pos_embed(embed, (20, 20), 1 + 400)
    torch.testing.assert_close(out, mae_interpolate_pos_embed(embed, 400, 1))
    assert torch.equal(out[:, 0], embed[:, 0])
    out = resize_vit_pos_embed(embed[:, 1:], (7, 7), 49)  # timm no_embed_class: no slot
    torch.testing.assert_close(out, mae_interpolate_pos_embed(embed[:, 1:], 49, 0))
    with pytest.raises(ValueError, match="square"):
        resize_vit_pos_embed(torch.randn(1, 1 + 15, 8), (4, 4), 17)


@pytest.mark.slow  # about a minute on a shared 2-core CPU: two ViT-S conversions, each verified against timm
def test_densekit_convert_vit_with_verify(tmp_path, capsys):
    ref = _random_timm("vit_small_patch16_224")
    src = tmp_path / "mae_vit_s.pth"
    torch.save(official_mae(ref.state_dict()), src)
    dst = tmp_path / "vit_s.pth"
    assert convert_main([str(src), str(dst), "--model", "vit_s", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify OK" in out and "mae" in out
    src = tmp_path / "vit_mmseg.pth"
    torch.save(mmseg_vit(ref.state_dict()), src)
    assert convert_main([str(src), str(dst), "--model", "vit_s", "--verify"]) == 0
    assert "verify OK" in capsys.readouterr().out
    assert convert_main([str(src), str(dst), "--model", "vit_s", "--window-size", "7"]) == 1
    assert "plain ViT" in capsys.readouterr().err


@pytest.mark.slow  # builds the ViT-B UPerNet twice: about a minute on a shared CPU
def test_mmseg_vit_upernet_whole_checkpoint_converts_with_config(tmp_path, capsys):
    from densekit.apis import init_model
    from densekit.engine.config import load_config
    from densekit.models.builder import build_model

    options = ["model.backbone.img_size=64"]
    cfg = load_config("upernet_vit_b_mln_ade", {"model.backbone.img_size": 64})
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    ours = model.state_dict()
    backbone = {k[len("backbone.model."):]: v for k, v in ours.items() if k.startswith("backbone.model.")}
    mmseg = {"backbone." + k: v for k, v in mmseg_vit(backbone).items()}
    mmseg.update({k: v for k, v in ours.items() if not k.startswith("backbone.")})
    src, dst = tmp_path / "upernet_vit_mmseg.pth", tmp_path / "upernet_vit_b.pth"
    torch.save({"state_dict": mmseg, "meta": {"CLASSES": ["a"] * 150}}, src)
    assert convert_main([str(src), str(dst), "--config", "upernet_vit_b_mln_ade", "--cfg-options", *options]) == 0
    assert "backbone" in capsys.readouterr().out
    loaded = init_model(cfg, str(dst)).state_dict()
    assert set(loaded) == set(ours)
    for key, value in ours.items():
        torch.testing.assert_close(loaded[key], value, atol=0, rtol=0, msg=key)


def test_rgb_patch_kernel_adapted_to_one_channel(tmp_path):
    ref = _random_timm("vit_small_patch16_224")
    path = tmp_path / "vit_s.pth"
    torch.save(ref.state_dict(), path)
    model = create_backbone("vit_s", pretrained=str(path), in_chans=1, out_indices=(3,))
    report = load_vit_pretrained(model, path, verbose=False)
    assert ("model.patch_embed.proj.weight", (384, 3, 16, 16), (384, 1, 16, 16)) in report.resized
    torch.testing.assert_close(model.model.patch_embed.proj.weight,
                               ref.patch_embed.proj.weight.sum(dim=1, keepdim=True))
