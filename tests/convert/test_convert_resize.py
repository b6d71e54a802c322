"""Resizing on load: bias tables to a new window, absolute position embeddings to a new grid,
the patch kernel to a new channel count; and clear errors where nothing can be resized."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import densekit
from densekit.convert import CheckpointError, load_pretrained

TABLE = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table")


def official_bicubic(table: torch.Tensor, side: int) -> torch.Tensor:
    """The official Swin utils.load_pretrained resize, written out independently."""
    n_heads = table.shape[1]
    src = int(table.shape[0] ** 0.5)
    out = F.interpolate(table.permute(1, 0).view(1, n_heads, src, src), size=(side, side), mode="bicubic")
    return out.view(n_heads, side * side).permute(1, 0)


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
