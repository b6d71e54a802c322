"""HuggingFace UperNet references for the parity tests (tests/heads/test_uper_head.py, tests/models/test_segmentor.py):
random weights whose BatchNorm statistics and affines, LayerNorms, Swin bias tables and ConvNeXt layer scales are
randomised, so that a misplaced tensor shows."""
from __future__ import annotations

import pytest
import torch
from torch import nn

STAGES = ["stage1", "stage2", "stage3", "stage4"]


def randomize(model: nn.Module, seed: int = 0, *, classifier_scale: float | None = None) -> nn.Module:
    """Non-trivial BatchNorm statistics and affines, LayerNorms, bias tables and layer scales (HF's or densekit's
    names); with ``classifier_scale``, the classifier weights drawn at that std (their 0.01-0.02 inits give logits
    so small that a wrong class order would hardly show)."""
    gen = torch.Generator().manual_seed(seed)

    def noise(t: torch.Tensor, std: float) -> torch.Tensor:
        return std * torch.randn(t.shape, generator=gen)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(noise(module.running_mean, 0.1))
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=gen))
                module.weight.copy_(1 + noise(module.weight, 0.1))
                module.bias.copy_(noise(module.bias, 0.1))
            elif isinstance(module, nn.LayerNorm):
                module.weight.add_(noise(module.weight, 0.2))
                module.bias.add_(noise(module.bias, 0.2))
        for name, param in model.named_parameters():
            if "layer_scale" in name or name.endswith("gamma"):  # HF inits 1e-6: the blocks would barely count
                param.copy_(0.5 + 0.5 * torch.rand(param.shape, generator=gen))
            elif "relative_position_bias_table" in name:  # HF inits zeros
                param.copy_(noise(param, 0.5))
            elif classifier_scale and name.endswith(("classifier.weight", "conv_seg.weight")):
                param.copy_(noise(param, classifier_scale))
    return model


def hf_upernet(kind: str, *, num_labels: int = 150, hidden_size: int = 512, auxiliary_channels: int = 256,
               id2label: dict[int, str] | None = None, classifier_scale: float | None = None) -> nn.Module:
    """HF UperNet on Swin-T (``kind="swin"``) or ConvNeXt-T, eval mode, randomised (see ``randomize``)."""
    transformers = pytest.importorskip("transformers")
    if kind == "swin":
        backbone = transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                           drop_path_rate=0.0, out_features=STAGES)
    else:
        backbone = transformers.ConvNextConfig(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3],
                                               out_features=STAGES)
    labels = {} if id2label is None else dict(id2label=id2label)
    config = transformers.UperNetConfig(backbone_config=backbone, num_labels=num_labels, hidden_size=hidden_size,
                                        auxiliary_channels=auxiliary_channels, auxiliary_in_channels=384,
                                        use_auxiliary_head=True, **labels)
    torch.manual_seed(0)
    model = transformers.UperNetForSemanticSegmentation(config).eval()
    return randomize(model, classifier_scale=classifier_scale)
