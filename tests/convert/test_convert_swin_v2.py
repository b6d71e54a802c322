"""Swin V2 checkpoints in every layout (official, timm, HF Swinv2Model / image classifier, mmpretrain, SimMIM,
densekit) load through ``pretrained=`` with the same stage outputs; V1 files are refused by V2 models and V2 files by
V1 models; the pretrained windows come from the model's argument, the file's meta or its name, in that order."""
from __future__ import annotations

import re

import pytest
import torch
from helpers.paths import scratch_dir

import densekit
from densekit.backbones.pretrained import load_pretrained_v2
from densekit.backbones.swin_v2 import SwinTransformerV2
from densekit.convert.report import CheckpointError
from densekit.convert.swin_v2 import convert_swin_v2, detect_v2_layout

timm = pytest.importorskip("timm")
SLIM = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=8)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Noisy norms, logit scales and biases (global RNG), so a misplaced norm or a dropped bias shows."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    return model


def _timm_slim() -> torch.nn.Module:
    from timm.models.swin_transformer_v2 import SwinTransformerV2 as TimmV2

    torch.manual_seed(0)
    return _perturb(TimmV2(img_size=64, **SLIM).eval())


def _to_official(timm_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm V2 keys -> the official release's: merging back to the end of the previous stage, ``head``, and the
    buffers official files carry."""
    out = {}
    for key, value in timm_sd.items():
        match = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample.{match.group(2)}"
        out[key.replace("head.fc.", "head.")] = value
        if key.endswith("attn.logit_scale"):
            prefix = key[: -len("logit_scale")]
            out[prefix + "relative_coords_table"] = torch.zeros(1, 15, 15, 2)
            out[prefix + "relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
            out[prefix.replace(".attn.", ".") + "attn_mask"] = torch.zeros(4, 64, 64)
    return out


def _stages(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(x)


def test_timm_and_official_files(tmp_path):
    reference = _timm_slim()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    timm_file, official_file = tmp_path / "timm.pth", tmp_path / "official.pth"
    torch.save(reference.state_dict(), timm_file)
    torch.save({"model": _to_official(reference.state_dict())}, official_file)
    for path, layout in [(timm_file, "timm"), (official_file, "official")]:
        model = SwinTransformerV2(**SLIM, out_indices=(0, 1), out_norm=False, pretrained=str(path)).eval()
        for ours, theirs in zip(_stages(model, x), expected):
            assert (ours - theirs).abs().max() < 1e-5, layout
    official = _to_official(reference.state_dict())
    assert detect_v2_layout(official) == "official"
    _, report = convert_swin_v2(official, "official")
    dropped = {key for key, _ in report.dropped}
    assert "layers.0.blocks.1.attn.relative_coords_table" in dropped
    assert "layers.0.blocks.1.attn.relative_position_index" in dropped
    assert "layers.0.blocks.1.attn_mask" in dropped and "head.weight" in dropped


def test_swinv2_t_preset_loads_a_timm_file(tmp_path):
    torch.manual_seed(1)
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False).eval()
    path = tmp_path / "swinv2_tiny_window8_256.pth"
    torch.save(reference.state_dict(), path)
    model = densekit.create_backbone("swinv2_t", pretrained=str(path), out_norm=False).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    for ours, theirs in zip(_stages(model, x), expected):
        assert (ours - theirs).abs().max() < 1e-4


def _hf_pair():
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=64, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=8,
                                       out_features=["stage1", "stage2"])
    torch.manual_seed(2)
    classifier = transformers.Swinv2ForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in classifier.named_parameters():
            if "norm" in name or "logit_scale" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    backbone = transformers.Swinv2Backbone(config).eval()
    missing, _ = backbone.load_state_dict(
        {k.removeprefix("swinv2."): v for k, v in classifier.state_dict().items()}, strict=False)
    assert not missing
    return classifier, backbone


def test_hf_model_and_classifier_files(tmp_path):
    classifier, backbone = _hf_pair()
    x = torch.randn(1, 3, 64, 64)  # the config's size: HF fixes windows and shifts from it
    with torch.no_grad():
        expected = backbone(x).feature_maps
    model_file, classifier_file = tmp_path / "hf_model.bin", tmp_path / "hf_classifier.bin"
    torch.save(classifier.swinv2.state_dict(), model_file)
    torch.save(classifier.state_dict(), classifier_file)
    for path in (model_file, classifier_file):
        model = SwinTransformerV2(**SLIM, out_indices=(0, 1), out_norm=False, pretrained=str(path)).eval()
        for ours, theirs in zip(_stages(model, x), expected):
            assert (ours - theirs).abs().max() < 1e-5, path.name
    sd = classifier.state_dict()
    converted, report = convert_swin_v2(sd, detect_v2_layout(sd))
    assert report.layout == "hf" and "out_norms.1.weight" in converted
    assert torch.equal(converted["stages.0.blocks.0.attn.q_bias"],
                       sd["swinv2.encoder.layers.0.blocks.0.attention.self.query.bias"])


def test_densekit_file_round_trip(tmp_path):
    torch.manual_seed(3)
    model = SwinTransformerV2(**SLIM, out_indices=(0, 1)).eval()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, tmp_path / "densekit.pth")
    loaded = SwinTransformerV2(**SLIM, out_indices=(0, 1), pretrained=str(tmp_path / "densekit.pth")).eval()
    x = torch.randn(1, 3, 40, 56)
    for a, b in zip(_stages(model, x), _stages(loaded, x)):
        assert torch.equal(a, b)


def test_v1_and_v2_files_refused_across(tmp_path):
    v1 = densekit.create_backbone("swin_t")
    torch.save(v1.state_dict(), tmp_path / "swin_v1.pth")
    with pytest.raises(CheckpointError, match="Swin V1 checkpoint.*this model is Swin V2"):
        densekit.create_backbone("swinv2_t", pretrained=str(tmp_path / "swin_v1.pth"))
    torch.save(_timm_slim().state_dict(), tmp_path / "swin_v2.pth")
    with pytest.raises(CheckpointError, match="Swin V2 checkpoint.*this model is Swin V1"):
        densekit.create_backbone("swin_t", pretrained=str(tmp_path / "swin_v2.pth"))


def test_report_names_the_windows(tmp_path):
    path = tmp_path / "swinv2_slim_patch4_window8_64.pth"
    torch.save(_timm_slim().state_dict(), path)
    model = SwinTransformerV2(**{**SLIM, "window_size": 16}, out_indices=(0, 1))
    report = load_pretrained_v2(model, str(path), verbose=False)
    assert "window 16" in report.windows and "pretrained_window_size=8" in report.windows
    assert "windows: window 16" in report.summary()
    model = SwinTransformerV2(**{**SLIM, "window_size": 16}, pretrained_window_size=8, out_indices=(0, 1))
    report = load_pretrained_v2(model, str(path), verbose=False)
    assert report.windows == "window 16, position-bias coordinates normalised by pretrained windows (8, 8)"


def test_convert_tool_writes_a_v2_file(tmp_path):
    from densekit.cli.convert import main

    src, dst = tmp_path / "swinv2_tiny_window8_256.pth", tmp_path / "swinv2_t.safetensors"
    torch.manual_seed(4)
    full = timm.create_model("swinv2_tiny_window8_256", pretrained=False)
    torch.save({"model": _to_official(full.state_dict())}, src)
    assert main([str(src), str(dst), "--model", "swinv2_t", "--verify"]) == 0
    written = densekit.create_backbone("swinv2_t", pretrained=str(dst)).state_dict()
    assert torch.equal(written["stages.2.blocks.5.attn.cpb_mlp.2.weight"],
                       full.state_dict()["layers.2.blocks.5.attn.cpb_mlp.2.weight"])


# ------------------------------------------------------------------------------------------- mmpretrain
def _to_mmpretrain(timm_sd: dict[str, torch.Tensor], prefix: str = "backbone.") -> dict[str, torch.Tensor]:
    """timm V2 keys -> mmpretrain ``SwinTransformerV2``'s, written from its source (swin_transformer_v2.py,
    utils/attention.py WindowMSAV2, utils/embed.py PatchMerging): ``stages``, ``attn.w_msa``, mmcv ``ffn``,
    merging at the start of stage i+1 as timm's, its reduction fed by ``nn.Unfold`` (mmseg's column order), its
    post-norm over 2C unpermuted, the final norm as ``norm{last}``, the buffers it keeps."""
    from swin2mmseg_reference import correct_unfold_reduction_order

    last = max(int(key.split(".")[1]) for key in timm_sd if key.startswith("layers."))
    out = {}
    for key, value in timm_sd.items():
        if key.startswith("head."):
            continue
        new = key.replace("patch_embed.proj.", "patch_embed.projection.").replace(".attn.", ".attn.w_msa.")
        new = new.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
        new = re.sub(r"^layers\.", "stages.", new)
        new = re.sub(r"^norm\.", f"norm{last}.", new)
        if new.endswith("downsample.reduction.weight"):
            value = correct_unfold_reduction_order(value)
        out[prefix + new] = value
        if key.endswith("attn.logit_scale"):
            buffers = prefix + new[: -len("logit_scale")]
            out[buffers + "relative_coords_table"] = torch.zeros(1, 15, 15, 2)
            out[buffers + "relative_position_index"] = torch.zeros(64, 64, dtype=torch.long)
    return out


def test_mmpretrain_file(tmp_path):
    reference = _timm_slim()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    wrapped, bare = tmp_path / "mmpretrain_wrapped.pth", tmp_path / "mmpretrain_bare.pth"
    torch.save({"state_dict": _to_mmpretrain(reference.state_dict()), "meta": {}}, wrapped)
    torch.save(_to_mmpretrain(reference.state_dict(), prefix=""), bare)
    for path in (wrapped, bare):
        model = SwinTransformerV2(**SLIM, out_indices=(0, 1), out_norm=False, pretrained=str(path)).eval()
        for ours, theirs in zip(_stages(model, x), expected):
            assert (ours - theirs).abs().max() < 1e-5, path.name
    state_dict = _to_mmpretrain(reference.state_dict(), prefix="")
    assert detect_v2_layout(state_dict) == "mmpretrain"
    converted, report = convert_swin_v2(state_dict, "mmpretrain")
    assert torch.equal(converted["out_norms.1.weight"], reference.state_dict()["norm.weight"])
    merge_norm = reference.state_dict()["layers.1.downsample.norm.bias"]  # over 2C: not permuted
    assert torch.equal(converted["stages.0.downsample.norm.bias"], merge_norm)
    assert "stages.0.downsample.reduction.weight" in report.permuted
    assert ("stages.0.blocks.0.attn.w_msa.relative_coords_table", "buffer, recomputed") in report.dropped


# ----------------------------------------------------------------------------------------------- SimMIM
SIMMIM_NAME = "simmim_pretrain__swinv2_tiny__img192_window12__800ep.pth"


def _simmim(encoder_official: dict[str, torch.Tensor], embed_dim: int, last_dim: int) -> dict:
    """The SimMIM pretraining checkpoint of an official-layout encoder: ``encoder.`` prefix, the mask token, the
    pixel decoder (Conv2d(C_last, 32 * 32 * 3, 1) + PixelShuffle(32) in microsoft/SimMIM simmim.py)."""
    model = {f"encoder.{key}": value for key, value in encoder_official.items() if not key.startswith("head.")}
    model["encoder.mask_token"] = torch.randn(1, 1, embed_dim)
    model["decoder.0.weight"] = torch.randn(32 * 32 * 3, last_dim, 1, 1)
    model["decoder.0.bias"] = torch.randn(32 * 32 * 3)
    return {"model": model}


@pytest.fixture(scope="module")
def simmim_v2(request) -> tuple[str, dict[str, torch.Tensor]]:
    """A SimMIM Swin V2-T file pretrained at window 12 on 192 px (noisy random weights), and its encoder in timm's
    layout."""
    torch.manual_seed(5)
    encoder = _perturb(timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=192, window_size=12))
    path = scratch_dir(request, "simmim") / SIMMIM_NAME
    torch.save(_simmim(_to_official(encoder.state_dict()), 96, 768), path)
    return str(path), encoder.state_dict()


def test_simmim_v2_file_at_window16_matches_timm(simmim_v2):
    """Window 12 at 192 px (last stage 6x6) run at window 16: the windows (12, 12, 12, 6) from the file name,
    nothing interpolated, the same stage outputs as timm given the encoder's weights and those windows."""
    path, encoder = simmim_v2
    reference = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=256, window_size=16,
                                  pretrained_window_sizes=(12, 12, 12, 6)).eval()
    missing, unexpected = reference.load_state_dict(encoder, strict=False)
    assert not unexpected and not [k for k in missing if "relative" not in k]
    ours = densekit.create_backbone("swinv2_t", window_size=16, out_norm=False).eval()
    report = load_pretrained_v2(ours, path, verbose=False)
    assert ours.pretrained_window_size == (12, 12, 12, 6)
    assert "(12, 12, 12, 6)" in report.windows and SIMMIM_NAME in report.windows_from
    assert report.layout == "simmim/official" and not report.resized
    dropped = dict(report.dropped)
    assert "mask token" in dropped["encoder.mask_token"] and "decoder" in dropped["decoder.0.weight"]
    assert dropped["encoder.layers.0.blocks.0.attn.relative_coords_table"] == "buffer, recomputed"
    assert ("encoder.layers.0.blocks.0.attn.qkv.weight", "stages.0.blocks.0.attn.qkv.weight") in report.renamed
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = reference.forward_intermediates(x, intermediates_only=True, norm=False, output_fmt="NCHW")
    diffs = [float((a - b).abs().max()) for a, b in zip(_stages(ours, x), expected)]
    print("SimMIM window 12 / 192 px at window 16 / 256 px: max abs diffs vs timm", diffs)
    assert max(diffs) < 1e-4


def test_simmim_v1_file_resizes_tables_as_the_official_file(tmp_path):
    """A V1 SimMIM file (window 6) at window 7: the encoder goes the official V1 way (bicubic tables), and the
    mask token and decoder are dropped and reported."""
    from densekit.backbones.pretrained import load_pretrained
    from densekit.backbones.swin import SwinTransformer
    from densekit.convert.official_swin import densekit_to_official

    slim = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 4), out_indices=(0, 1))
    torch.manual_seed(7)
    official = densekit_to_official(SwinTransformer(**slim, window_size=6).state_dict())
    simmim_file = tmp_path / "simmim_pretrain__swin_slim__img192_window6__100ep.pth"
    torch.save(_simmim(official, 16, 32), simmim_file)
    torch.save({"model": official}, tmp_path / "official.pth")
    x = torch.randn(1, 3, 56, 56)
    models, reports = [], []
    for path in (simmim_file, tmp_path / "official.pth"):
        model = SwinTransformer(**slim, window_size=7, out_norm=False).eval()
        reports.append(load_pretrained(model, path, verbose=False))
        models.append(model)
    for a, b in zip(_stages(models[0], x), _stages(models[1], x)):
        assert torch.equal(a, b)
    simmim, plain = reports
    assert simmim.layout == "simmim/official" and simmim.resized == plain.resized and len(simmim.resized) == 4
    assert {"encoder.mask_token", "decoder.0.weight", "decoder.0.bias"} <= {key for key, _ in simmim.dropped}


# ------------------------------------------------------------------------------------- pretrained windows
@pytest.mark.parametrize("name, windows", [
    ("swinv2_tiny_patch4_window8_256.pth", (8, 8, 8, 8)),
    ("swinv2_tiny_patch4_window16_256.pth", (16, 16, 16, 8)),
    ("swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth", (12, 12, 12, 6)),
    (SIMMIM_NAME, (12, 12, 12, 6)),
    ("upernet_swinv2_t_w16_512.safetensors", (16, 16, 16, 16)),
    ("my_swinv2_w12.pth", (12, 12, 12, 12)),
    ("swinv2_t.pth", None),
])
def test_windows_from_name(name, windows):
    from densekit.convert.v2_windows import windows_from_name

    found = windows_from_name(f"/ckpt/{name}", 4)
    assert (found and found[0]) == windows


def test_window_sources_given_meta_name(tmp_path):
    """Given windows win; else the checkpoint's meta (densekit) or config (official training files); else the name;
    the report says which. The windows taken from a name run exactly as the same windows given."""
    weights = _timm_slim().state_dict()
    named, plain = tmp_path / "swinv2_slim_patch4_window8_64.pth", tmp_path / "plain.pth"
    torch.save(weights, named)
    torch.save(weights, plain)
    meta, config = tmp_path / "meta.pth", tmp_path / "config.pth"
    torch.save({"state_dict": weights, "meta": {"pretrained_window_size": [8, 4]}}, meta)
    official_config = {"MODEL": {"SWINV2": {"WINDOW_SIZE": 8, "PRETRAINED_WINDOW_SIZES": [0, 0]}},
                       "DATA": {"IMG_SIZE": 32}}
    torch.save({"model": _to_official(weights), "config": official_config}, config)
    wide = {**SLIM, "window_size": 16}
    cases = [(named, {}, (8, 8), "the file name"), (plain, {}, (0, 0), ""), (meta, {}, (8, 4), "meta"),
             (config, {}, (8, 4), "MODEL.SWINV2.WINDOW_SIZE 8 at DATA.IMG_SIZE 32"),
             (named, {"pretrained_window_size": 6}, (6, 6), "given")]
    for path, given, windows, source in cases:
        model = SwinTransformerV2(**wide, **given, out_indices=(0, 1))
        report = load_pretrained_v2(model, str(path), verbose=False)
        assert model.pretrained_window_size == windows, path.name
        assert source in report.windows_from, path.name
        assert ("WARNING" in report.windows) == bool(given), path.name  # 6 given, the name says 8
    x = torch.randn(1, 3, 64, 64)
    by_name = SwinTransformerV2(**wide, out_indices=(0, 1), pretrained=str(named)).eval()
    given = SwinTransformerV2(**wide, pretrained_window_size=8, out_indices=(0, 1), pretrained=str(plain)).eval()
    own = SwinTransformerV2(**wide, out_indices=(0, 1), pretrained=str(plain)).eval()
    for a, b, c in zip(_stages(by_name, x), _stages(given, x), _stages(own, x)):
        assert torch.equal(a, b) and not torch.allclose(a, c)


def test_convert_tool_verifies_a_simmim_file_at_window16(simmim_v2, tmp_path, capsys):
    """densekit convert --window-size 16 --verify: windows (12, 12, 12, 6) from the source name, written to the new
    file's meta, and timm built with them agrees."""
    from densekit.cli.convert import main
    from densekit.convert.io import safetensors_metadata

    dst = tmp_path / "swinv2_t.safetensors"
    assert main([simmim_v2[0], str(dst), "--model", "swinv2_t", "--window-size", "16", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "verify OK" in printed and "stage 3: max |densekit - timm|" in printed and "skipped" not in printed
    assert safetensors_metadata(dst)["pretrained_window_size"] == "[12, 12, 12, 6]"
