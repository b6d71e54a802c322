"""Session fixtures (a pytest plugin of tests/conftest.py): one random timm Swin-T, its weights in every
layout, and files of them.

Everything is random-init (no network). Building a Swin-T on CPU costs seconds, so the models and
files are session-scoped; ``dk_model`` is shared by tests that only load into it (or expect a load
to fail before it touches the model) and must not be relied on for values a test did not load.
"""
from __future__ import annotations

import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from swin2mmseg_reference import swin2mmseg
from swin_unet_reference import T_BACKBONE, OfficialSwinUnet, randomize

import densekit

DEPTHS = (2, 2, 6, 2)


@pytest.fixture(scope="session")
def timm_swin() -> torch.nn.Module:
    """timm Swin-T (window 7, 224) with random weights and LayerNorms moved off (1, 0)."""
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # fresh norms are (1, 0): a dropped or misplaced norm would go unseen
                param.add_(torch.randn_like(param) * 0.2)
    return model


@pytest.fixture(scope="session")
def timm_state_dict(timm_swin: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in timm_swin.state_dict().items()}


@pytest.fixture(scope="session")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def timm_features(timm_swin: torch.nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return timm_swin.forward_intermediates(image, norm=False, intermediates_only=True)


@pytest.fixture(scope="session")
def official_state_dict(timm_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the official release layout, with the buffers and head it carries."""
    out: dict[str, torch.Tensor] = {}
    for key, value in timm_state_dict.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
        if m:  # timm: start of stage i; official: end of stage i - 1
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        out[key.replace("head.fc.", "head.")] = value
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = torch.arange(49 * 49).view(49, 49)
            if j % 2 and i < 3:
                windows = (56 // 2**i // 7) ** 2
                out[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros(windows, 49, 49)
    return out


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def timm_pth(timm_state_dict, ckpt_dir):
    path = ckpt_dir / "swin_tiny_timm.pth"
    torch.save(timm_state_dict, path)
    return path


@pytest.fixture(scope="session")
def timm_safetensors(timm_state_dict, ckpt_dir):
    path = ckpt_dir / "swin_tiny_timm.safetensors"
    save_file({k: v.contiguous() for k, v in timm_state_dict.items()}, str(path))
    return path


@pytest.fixture(scope="session")
def official_pth(official_state_dict, ckpt_dir):
    path = ckpt_dir / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": official_state_dict}, path)
    return path


@pytest.fixture(scope="session")
def mmseg_pth(official_state_dict, ckpt_dir):
    """swin2mmseg output inside a full segmentor checkpoint: mmengine wrapper, decode heads."""
    state_dict = swin2mmseg(official_state_dict)
    state_dict["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    state_dict["auxiliary_head.conv_seg.weight"] = torch.randn(150, 256, 1, 1)
    path = ckpt_dir / "upernet_swin_tiny_mmseg.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2", "epoch": 0}, "state_dict": state_dict}, path)
    return path


@pytest.fixture(scope="session")
def dk_model() -> torch.nn.Module:
    """A densekit Swin-T with out norms, shared by tests that load into it."""
    return densekit.create_backbone("swin_t").eval()


# ------------------------------------------------------------------------------------------- Swin-Unet
@pytest.fixture(scope="session")
def official_t() -> OfficialSwinUnet:
    """The official Swin-Unet-T (``swin_unet_reference``), random weights with norms and biases moved off."""
    torch.manual_seed(0)
    model = OfficialSwinUnet(num_classes=9, **T_BACKBONE).eval()
    randomize(model)
    return model


@pytest.fixture(scope="session")
def official_t_pth(official_t, tmp_path_factory):
    """Saved as the official trainer does: ``torch.save(model.state_dict(), 'epoch_149.pth')``."""
    path = tmp_path_factory.mktemp("swin_unet") / "epoch_149.pth"
    torch.save(official_t.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def grey_image() -> torch.Tensor:
    return torch.randn(1, 1, 224, 224, generator=torch.Generator().manual_seed(3))
