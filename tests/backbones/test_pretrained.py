"""What a backbone's ``pretrained=`` loads (densekit.backbones.pretrained): Swin checkpoints in every layout into
densekit's Swin (timm's features reproduced, resizing, clear errors), and Swin weights into a Swin-Unet (whole
official checkpoints give the official logits; ImageNet Swin is mirrored into the decoder by the official rule)."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from swin_unet_reference import T_BACKBONE, OfficialSwinUnet, official_load_from

import densekit
from densekit.backbones.pretrained import (
    load_imagenet_swin,
    load_pretrained,
    load_swin_unet_checkpoint,
)
from densekit.convert import CheckpointError, densekit_to_mmseg
from densekit.convert.swin_unet import densekit_to_official, official_to_densekit
from densekit.layers.rel_pos_bias import resize_bias_table
from densekit.models import SwinUnet

TOL = 1e-4
TABLE = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table")
_BUFFER = re.compile(r"(relative_position_index|attn_mask)$")


def keys(pairs: list[tuple[str, str]]) -> list[str]:
    """The keys of a report's ``(key, why)`` pairs (``dropped``, ``missing``)."""
    return [key for key, _ in pairs]


def max_diffs(got: list[torch.Tensor], expected: list[torch.Tensor]) -> list[float]:
    assert [g.shape for g in got] == [e.shape for e in expected]
    return [float((g - e).abs().max()) for g, e in zip(got, expected)]


def official_bicubic(table: torch.Tensor, side: int) -> torch.Tensor:
    """The official Swin utils.load_pretrained resize, written out independently."""
    n_heads = table.shape[1]
    src = int(table.shape[0] ** 0.5)
    out = F.interpolate(table.permute(1, 0).view(1, n_heads, src, src), size=(side, side), mode="bicubic")
    return out.view(n_heads, side * side).permute(1, 0)


# ----------------------------------------------------------------------------- Swin: timm and official
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_timm_checkpoint_matches_timm_features(fmt, request, image, timm_features):
    """Acceptance A: timm weights (.pth and .safetensors) give timm's intermediates within 1e-4."""
    path = request.getfixturevalue(f"timm_{fmt}")
    model = densekit.create_backbone("swin_t", pretrained=str(path), out_norm=False).eval()
    with torch.no_grad():
        diffs = max_diffs(model(image), timm_features)
    assert max(diffs) < 1e-4, diffs


def test_official_checkpoint_matches_timm_features(official_pth, image, timm_features):
    """{'model': sd} with relative_position_index / attn_mask buffers and a head loads and matches timm."""
    model = densekit.create_backbone("swin_t", out_norm=False).eval()
    report = load_pretrained(model, official_pth, verbose=False)
    assert report.layout == "official"
    assert {"head.weight", "head.bias", "norm.weight"} <= set(keys(report.dropped))  # no out norms in this model
    assert "layers.0.blocks.1.attn_mask" in keys(report.dropped)
    assert "layers.2.blocks.5.attn.relative_position_index" in keys(report.dropped)
    assert ("layers.0.downsample.reduction.weight", "stages.0.downsample.reduction.weight") in report.renamed
    assert report.missing == [] and report.resized == []
    with torch.no_grad():
        diffs = max_diffs(model(image), timm_features)
    assert max(diffs) < 1e-4, diffs


def test_timm_report_and_final_norm(dk_model, timm_pth, timm_state_dict):
    """timm's final norm lands in out_norms.3; out_norms.0-2 are reported missing, not an error."""
    report = load_pretrained(dk_model, timm_pth, verbose=False)
    assert report.layout == "timm"
    assert ("norm.weight", "out_norms.3.weight") in report.renamed
    assert ("layers.1.downsample.reduction.weight", "stages.0.downsample.reduction.weight") in report.renamed
    assert keys(report.dropped) == ["head.fc.weight", "head.fc.bias"]
    assert keys(report.missing) == [f"out_norms.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert report.loaded == len(timm_state_dict) - 2
    assert torch.equal(dk_model.out_norms["3"].weight, timm_state_dict["norm.weight"])
    reduction = timm_state_dict["layers.3.downsample.reduction.weight"]
    assert torch.equal(dk_model.stages[2].downsample.reduction.weight, reduction)
    summary = report.summary()
    assert "timm layout" in summary and "missing 6" in summary and "dropped 2" in summary


# ------------------------------------------------------------------------------------ Swin: mmseg
def test_mmseg_and_official_checkpoints_load_identically(official_pth, mmseg_pth):
    """Acceptance C: swin2mmseg's output (backbone. prefix, mmengine wrapper, decode heads) and the
    official file give bit-identical densekit weights."""
    from_official = densekit.create_backbone("swin_t")
    from_mmseg = densekit.create_backbone("swin_t")
    load_pretrained(from_official, official_pth, verbose=False)
    report = load_pretrained(from_mmseg, mmseg_pth, verbose=False)
    assert report.layout == "mmseg"
    assert {"decode_head.conv_seg.weight", "auxiliary_head.conv_seg.weight"} <= set(keys(report.dropped))
    assert "stages.0.blocks.1.attn_mask" in keys(report.dropped)
    assert "stages.1.blocks.0.attn.w_msa.relative_position_index" in keys(report.dropped)
    assert sorted(report.permuted) == sorted(
        f"stages.{i}.downsample.{name}" for i in range(3) for name in ("norm.weight", "norm.bias", "reduction.weight")
    )
    official_sd, mmseg_sd = from_official.state_dict(), from_mmseg.state_dict()
    assert official_sd.keys() == mmseg_sd.keys()
    for key, value in official_sd.items():
        assert torch.equal(value, mmseg_sd[key]), key


def test_mmseg_segmentor_checkpoint_with_out_norms(dk_model, tmp_path):
    """A trained mmseg UPerNet: norm0..norm3, index buffers, decode heads; every model key loads."""
    source = {k: torch.randn_like(v) for k, v in dk_model.state_dict().items()}
    state_dict = {f"backbone.{k}": v for k, v in densekit_to_mmseg(source).items()}
    state_dict["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    state_dict["decode_head.conv_seg.bias"] = torch.zeros(150)
    path = tmp_path / "iter_160000.pth"
    optimizer = {"state": {}, "param_groups": []}
    torch.save({"meta": {"iter": 160000}, "state_dict": state_dict, "optimizer": optimizer}, path)
    report = load_pretrained(dk_model, path, verbose=False)
    assert report.missing == []
    assert keys(report.dropped) == ["stages.0.blocks.0.attn.w_msa.relative_position_index",
                                    "decode_head.conv_seg.bias"]
    for key, value in dk_model.state_dict().items():
        assert torch.equal(value, source[key]), key


# ----------------------------------------------------------------------------------- Swin: resizing
@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's geometric resize warns about its own indexing
def test_window_12_bias_tables_bicubic_and_geometric(timm_pth, timm_state_dict):
    """Acceptance B: window-7 weights into a window-12 model; bicubic = official resize, geometric differs."""
    model = densekit.create_backbone("swin_t", pretrained=str(timm_pth), window_size=12)
    params = dict(model.named_parameters())
    bicubic = {}
    for key, table in timm_state_dict.items():
        m = TABLE.fullmatch(key)
        if m:
            ours = params[f"stages.{m.group(1)}.blocks.{m.group(2)}.attn.relative_position_bias_table"]
            assert ours.shape == (529, table.shape[1])
            torch.testing.assert_close(ours.detach(), official_bicubic(table, 23), atol=1e-6, rtol=0)
            bicubic[key] = ours.detach().clone()
    assert len(bicubic) == 12

    report = load_pretrained(model, timm_pth, bias_resize="geometric", verbose=False)
    assert len(report.resized) == 12
    assert all(new == (529, old[1]) for _, old, new in report.resized)
    geometric = params["stages.0.blocks.0.attn.relative_position_bias_table"].detach()
    assert geometric.shape == (529, 3)
    assert (geometric - bicubic["layers.0.blocks.0.attn.relative_position_bias_table"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="bias_resize"):
        load_pretrained(model, timm_pth, bias_resize="nearest", verbose=False)


def test_absolute_pos_embed_resized_to_model_grid(official_state_dict, tmp_path):
    """ape: a 56x56 embedding (224 pretraining) resized bicubically to 96x96 (pretrain_img_size 384)."""
    state_dict = dict(official_state_dict)
    state_dict["absolute_pos_embed"] = torch.randn(1, 56 * 56, 96)
    path = tmp_path / "ape.pth"
    torch.save({"model": state_dict}, path)
    model = densekit.create_backbone("swin_t", ape=True, pretrain_img_size=384)
    report = load_pretrained(model, path, verbose=False)
    assert ("absolute_pos_embed", (1, 3136, 96), (1, 9216, 96)) in report.resized
    grid = state_dict["absolute_pos_embed"].reshape(1, 56, 56, 96).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(96, 96), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 9216, 96)
    torch.testing.assert_close(model.absolute_pos_embed.detach(), expected, atol=1e-6, rtol=0)


def test_in_chans_1_sums_rgb_kernels(timm_pth, timm_state_dict):
    model = densekit.create_backbone("swin_t", in_chans=1, pretrained=str(timm_pth)).eval()
    expected = timm_state_dict["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(), expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 64, 64))
    assert [o.shape[1] for o in outs] == [96, 192, 384, 768]


def test_non_square_bias_table_is_an_error(dk_model, timm_state_dict, tmp_path):
    state_dict = dict(timm_state_dict)
    state_dict["layers.1.blocks.0.attn.relative_position_bias_table"] = torch.randn(170, 6)
    path = tmp_path / "bad_table.pth"
    torch.save(state_dict, path)
    key = r"stages\.1\.blocks\.0\.attn\.relative_position_bias_table"
    with pytest.raises(CheckpointError, match=key + r".*not a \(2W-1\)\^2 grid") as err:
        load_pretrained(dk_model, path, verbose=False)
    assert str(path) in str(err.value)


def test_unresizable_shape_is_an_error_naming_keys_and_shapes(dk_model, timm_state_dict, tmp_path):
    state_dict = dict(timm_state_dict)
    state_dict["layers.0.blocks.1.mlp.fc1.weight"] = torch.randn(200, 96)
    state_dict["layers.2.blocks.0.attn.relative_position_bias_table"] = torch.randn(169, 5)  # heads differ
    path = tmp_path / "bad_shapes.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(dk_model, path, verbose=False)
    message = str(err.value)
    assert "stages.0.blocks.1.mlp.fc1.weight" in message and "(200, 96)" in message and "(384, 96)" in message
    assert "stages.2.blocks.0.attn.relative_position_bias_table" in message and "(169, 5)" in message


# ------------------------------------------------------------------------------------- Swin: errors
def test_missing_pretrained_file_names_the_path(dk_model, tmp_path):
    path = tmp_path / "nowhere" / "swin_tiny.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_pretrained(dk_model, path)


def test_swin_s_weights_into_swin_t_name_the_unexpected_keys(dk_model, timm_state_dict, tmp_path):
    swin_s = dict(timm_state_dict)  # Swin-S = Swin-T with 18 blocks in stage 2, same widths
    block0 = {k: v for k, v in timm_state_dict.items() if k.startswith("layers.2.blocks.0.")}
    for j in range(6, 18):
        swin_s.update({k.replace("blocks.0.", f"blocks.{j}."): v for k, v in block0.items()})
    path = tmp_path / "swin_small_patch4_window7_224.pth"
    torch.save(swin_s, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(dk_model, path, verbose=False)
    message = str(err.value)
    assert str(path) in message
    assert f"{12 * len(block0)} unexpected keys" in message
    assert "stages.2.blocks.6.norm1.weight (checkpoint: layers.2.blocks.6.norm1.weight)" in message


# ------------------------------------------------------------------------ Swin-Unet: official checkpoints
@pytest.mark.parametrize("in_chans", [3, 1])
def test_official_checkpoint_gives_the_official_logits(official_t, official_t_pth, grey_image, in_chans):
    """The acceptance: official-layout checkpoint (random weights) -> densekit, logits within 1e-4 at 224x224.

    in_chans=1: the 3-channel patch embedding is summed over its input channels, which equals the
    official wrapper's repeat of a grey image to 3 channels.
    """
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=in_chans), decode_head=dict(num_classes=9)).eval()
    report = load_swin_unet_checkpoint(model, official_t_pth, verbose=False)
    assert report.layout == "official" and not report.missing
    assert all(_BUFFER.search(key) for key in keys(report.dropped))  # only buffers are dropped
    image = grey_image.expand(-1, 3, -1, -1) if in_chans == 3 else grey_image
    with torch.no_grad():
        expected = official_t(image)
        got = model(image, mode="tensor")
    assert got.shape == expected.shape == (1, 9, 224, 224)
    diff = (got - expected).abs().max().item()
    print(f"in_chans={in_chans}: max |densekit - official| = {diff:.3e} (logits std {expected.std():.3f})")
    assert expected.std() > 0.3  # randomised norms and biases reach the logits
    assert diff < TOL


def test_checkpoint_misfits_are_named(official_t, tmp_path):
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3), decode_head=dict(num_classes=4))
    with pytest.raises(CheckpointError, match=r"decode_head\.conv_seg\.weight: checkpoint \(9, 96, 1, 1\)"):
        load_swin_unet_checkpoint(model, {"model": official_t.state_dict()}, verbose=False)
    with pytest.raises(CheckpointError, match="not a Swin-Unet checkpoint"):
        load_swin_unet_checkpoint(model, {"layers.0.blocks.0.norm1.weight": torch.ones(96)}, verbose=False)


def test_pretrained_accepts_a_swin_unet_checkpoint(official_t, official_t_pth):
    """pretrained= a Swin-Unet checkpoint: everything loads; a classifier for other classes is dropped (fine-tuning)."""
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3, pretrained=str(official_t_pth)),
                     decode_head=dict(num_classes=9))
    assert model.pretrained_report.layout == "official" and not model.pretrained_report.missing
    expected = densekit_to_official(model.state_dict())
    assert all(torch.equal(v, official_t.state_dict()[k]) for k, v in expected.items())
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3, pretrained=str(official_t_pth)),
                     decode_head=dict(num_classes=4))
    report = model.pretrained_report
    assert keys(report.missing) == ["decode_head.conv_seg.weight"]
    dropped, why = report.dropped[-1]  # named as in the checkpoint: the official classifier is `output`
    assert dropped == "output.weight" and why.startswith("a classifier for another number of classes")
    assert torch.equal(model.norm.weight, official_t.swin_unet.norm.weight)


# --------------------------------------------------------------------------- Swin-Unet: ImageNet mirroring
def _official_rule(pretrained: dict) -> tuple[OfficialSwinUnet, set[str]]:
    """Official Swin-Unet-T initialised by the official rule; the decoder parameters it took from the encoder."""
    official = OfficialSwinUnet(num_classes=9, **T_BACKBONE)
    model_dict = official.swin_unet.state_dict()
    loaded = official_load_from(official.swin_unet, pretrained)
    mirrored = {k for k in loaded if k.startswith("layers_up.") and k in model_dict}
    return official, mirrored


@pytest.mark.parametrize("corrupt", [False, True], ids=["imagenet", "one-misfit"])
def test_imagenet_mirroring_matches_the_official_rule(official_state_dict, corrupt):
    """Swin-T ImageNet weights (official layout, depths 2-2-6-2) -> Swin-Unet-T (2-2-2-2): the decoder
    weights taken from encoder stages are the official ones, by name, count and value; with one
    misfitting tensor, the official rule drops it from encoder and decoder alike."""
    pretrained = dict(official_state_dict)
    if corrupt:
        pretrained["layers.1.blocks.0.mlp.fc1.weight"] = torch.randn(10, 192)
    official, official_up = _official_rule(pretrained)
    params = {k for k in official_up if not _BUFFER.search(k)}
    expected, _ = official_to_densekit({"swin_unet." + k: official.swin_unet.state_dict()[k] for k in params})

    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3), decode_head=dict(num_classes=9))
    report = load_imagenet_swin(model, {"model": pretrained}, verbose=False)
    mirrored = {dst for _, dst in report.mirrored}
    print(f"mirrored into the decoder: densekit {len(mirrored)}; official rule {len(official_up)} state-dict "
          f"entries of which {len(params)} parameters ({len(official_up) - len(params)} recomputable buffers)")
    assert mirrored == set(expected)
    assert len(report.mirrored) == len(params) == (77 if corrupt else 78)
    assert report.mirrored[0][0].startswith("layers.")  # named as in the checkpoint
    misfits = {"backbone.stages.1.blocks.0.mlp.fc1.weight", "decode_head.stages.1.blocks.0.mlp.fc1.weight"}
    assert set(report.missing_weights()) == (misfits if corrupt else set())
    # Every weight densekit loaded equals what the official rule put in the same place.
    official_sd, _ = official_to_densekit({"swin_unet." + k: v for k, v in official.swin_unet.state_dict().items()})
    state = model.state_dict()
    loaded = [k for k in state if k not in keys(report.missing)]
    assert len(loaded) == report.loaded
    assert all(torch.equal(state[k], official_sd[k]) for k in loaded)
    assert "norm.weight" in loaded  # the classifier's final norm is the bottleneck norm, officially
    assert not any(k.startswith("decode_head.") and k not in mirrored for k in loaded)


def test_mirroring_from_timm_and_mmseg_layouts(official_state_dict, timm_pth, mmseg_pth):
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=3), decode_head=dict(num_classes=9))
    reference = load_imagenet_swin(model, {"model": official_state_dict}, verbose=False)
    expected = {k: v.clone() for k, v in model.state_dict().items() if k not in keys(reference.missing)}
    for path in (timm_pth, mmseg_pth):
        report = load_imagenet_swin(model, path, verbose=False)
        assert {d for _, d in report.mirrored} == {d for _, d in reference.mirrored}
        state = model.state_dict()
        assert all(torch.allclose(state[k], v) for k, v in expected.items()), path


def test_mirroring_resizes_bias_tables_and_input_channels(official_state_dict, official_pth):
    """A window of 8 resizes every encoder and mirrored decoder table bicubically (the official code drops
    them); in_chans=1 sums the patch embedding; the pretrained= route reports the same."""
    model = SwinUnet(backbone=dict(T_BACKBONE, in_chans=1, window_size=8, pretrained=str(official_pth)),
                     decode_head=dict(num_classes=9))
    report = model.pretrained_report
    resized = {key for key, _, _ in report.resized}
    tables = {k for k in model.state_dict() if k.endswith("relative_position_bias_table")}
    assert resized == tables | {"backbone.patch_embed.proj.weight"}
    assert len(tables) == 8 + 6 and len(report.mirrored) == 78
    state = model.state_dict()
    table = official_state_dict["layers.2.blocks.1.attn.relative_position_bias_table"]
    assert torch.allclose(state["decode_head.stages.0.blocks.1.attn.relative_position_bias_table"],
                          resize_bias_table(table, 8))
    assert torch.allclose(state["backbone.patch_embed.proj.weight"],
                          official_state_dict["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert "mirrored into the decoder 78" in report.summary()
