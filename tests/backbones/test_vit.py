"""densekit's ViT backbone (timm's ViT, blocks' tokens as NCHW maps) against timm's forward_intermediates."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from densekit.backbones import ViTBackbone, create_backbone


def _timm_reference(model: ViTBackbone, name: str, **kwargs) -> torch.nn.Module:
    """timm's ViT with densekit's weights (blocks densekit pruned are not needed: norm=False, indices <= last)."""
    ref = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs).eval()
    missing, unexpected = ref.load_state_dict({k[len("model."):]: v for k, v in model.state_dict().items()},
                                              strict=False)
    assert not unexpected
    assert all(k.startswith(("norm.", "blocks.")) for k in missing)
    return ref


@pytest.fixture(scope="module")
def vit_b_pair():
    torch.manual_seed(0)
    model = create_backbone("vit_base_patch16_224", img_size=512, out_indices=(3, 5, 7, 11)).eval()
    return model, _timm_reference(model, "vit_base_patch16_224", img_size=512)


@pytest.mark.parametrize("size", [(224, 224), (512, 512), (500, 375)])
def test_vit_b_equals_timm_forward_intermediates(vit_b_pair, size):
    model, ref = vit_b_pair
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        got = model(x)
        # timm floors partial patches; densekit pads right/bottom to whole patches (as mmseg's PatchEmbed)
        padded = F.pad(x, (0, -size[1] % 16, 0, -size[0] % 16))
        expected = ref.forward_intermediates(padded, indices=[3, 5, 7, 11], norm=False, intermediates_only=True)
    assert model.out_channels == [768] * 4 and model.strides == [16] * 4
    for a, b in zip(got, expected):
        assert a.shape == (1, 768, -(-size[0] // 16), -(-size[1] // 16))
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_dinov2_register_tokens_dropped_and_any_size():
    model = create_backbone("vit_small_patch14_reg4_dinov2", img_size=224, out_indices=(2, 5)).eval()
    ref = _timm_reference(model, "vit_small_patch14_reg4_dinov2", img_size=224)
    x = torch.randn(1, 3, 140, 98)
    with torch.no_grad():
        got = model(x)
        expected = ref.forward_intermediates(x, indices=[2, 5], norm=False, intermediates_only=True)
    assert [tuple(f.shape) for f in got] == [(1, 384, 10, 7)] * 2
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_final_norm_normalises_only_the_last_block():
    model = create_backbone("vit_s", out_indices=(5, 11), final_norm=True).eval()
    ref = _timm_reference(model, "vit_small_patch16_224")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = model(x)
        plain = ref.forward_intermediates(x, indices=[5, 11], norm=False, intermediates_only=True)
        normed = ref.forward_intermediates(x, indices=[5, 11], norm=True, intermediates_only=True)
    torch.testing.assert_close(got[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], normed[1], atol=1e-5, rtol=0)
    # without the last block the norm is never applied, so it is not kept
    assert not hasattr(create_backbone("vit_s", out_indices=(3,), final_norm=True).model.norm, "weight")


def test_blocks_after_the_last_index_are_pruned():
    model = create_backbone("vit_s", out_indices=(1, 3))
    assert len(model.model.blocks) == 4


def test_frozen_stages_freeze_embedding_and_first_blocks():
    model = create_backbone("vit_s", out_indices=(3,), frozen_stages=2)
    model.train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "model.pos_embed" in frozen and "model.cls_token" in frozen
    assert any(n.startswith("model.patch_embed.") for n in frozen)
    assert any(n.startswith("model.blocks.1.") for n in frozen)
    assert not any(n.startswith("model.blocks.2.") for n in frozen)
    assert not model.model.blocks[0].training and model.model.blocks[2].training


def test_with_cp_and_drop_path_train_with_gradients():
    model = create_backbone("vit_s", out_indices=(1, 3), with_cp=True, drop_path_rate=0.1)
    assert model.model.grad_checkpointing
    assert model.model.blocks[3].drop_path1.drop_prob > 0
    model.train()
    loss = sum(f.mean() for f in model(torch.randn(2, 3, 48, 40)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("vit_s", out_indices=(5, 3))
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("vit_s", out_indices=(12,))
    with pytest.raises(ValueError, match="frozen_stages"):
        create_backbone("vit_s", frozen_stages=13)
    with pytest.raises(ValueError, match="not a timm ViT"):
        ViTBackbone("resnet18")
