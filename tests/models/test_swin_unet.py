"""SwinUnet: patch expansion layout, any input size, in_chans 1 or 3, the mirrored decoder, losses, predictions.

Agreement with the official network (logits at 224x224) is tested in tests/convert/test_convert_swin_unet.py, the
CPU fast paths (densekit.accel) against the network's own in tests/accel/test_swin_accel.py.
The full Swin-Unet-T is built once (for the sizes the issue names); everything else uses a slim model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from densekit.backbones.swin import SwinStage
from densekit.inference.checkpoint import load_model_checkpoint
from densekit.layers.patch import FinalPatchExpand, PatchExpand, tokens_to_pixels
from densekit.models import SwinUnet, SwinUnetDiceLoss
from densekit.registry import MODELS
from densekit.structures import SegDataSample

# The model part of a Synapse recipe (official Swin-Unet-T: swin_tiny_patch4_window7_224_lite.yaml).
T_MODEL = dict(
    type="SwinUnet",
    backbone=dict(type="SwinTransformer", embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7,
                  in_chans=1, drop_path_rate=0.2, pretrained=None),
    decode_head=dict(type="SwinUnetDecoder", in_channels=[96, 192, 384, 768], num_classes=9,
                     loss_decode=[dict(type="CrossEntropyLoss", loss_weight=0.4, avg_non_ignore=True),
                                  dict(type="SwinUnetDiceLoss", loss_weight=0.6)]),
)
SLIM = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.0)


def slim(num_classes: int = 3, **backbone) -> SwinUnet:
    torch.manual_seed(0)
    return SwinUnet(backbone={**SLIM, "in_chans": 1, **backbone}, decode_head=dict(num_classes=num_classes))


@pytest.fixture(scope="module")
def swin_unet_t() -> SwinUnet:
    init_default_scope("densekit")
    return MODELS.build(T_MODEL).eval()


# ------------------------------------------------------------------------------------- patch layers
def test_tokens_to_pixels_is_the_official_rearrange():
    """``b h w (p1 p2 c) -> b (h p1) (w p2) c``, written out element by element."""
    x = torch.randn(2, 3, 5, 4 * 6)
    out = tokens_to_pixels(x, 2)
    assert out.shape == (2, 6, 10, 6)
    for h, w, p1, p2 in [(0, 0, 0, 0), (1, 2, 0, 1), (2, 4, 1, 0), (2, 3, 1, 1)]:
        assert torch.equal(out[:, 2 * h + p1, 2 * w + p2], x[:, h, w, (p1 * 2 + p2) * 6:(p1 * 2 + p2 + 1) * 6])


def test_patch_expand_shapes_and_weights():
    expand, final = PatchExpand(32), FinalPatchExpand(32, 4)
    assert expand.expand.weight.shape == (64, 32) and expand.expand.bias is None and expand.norm.weight.shape == (16,)
    assert final.expand.weight.shape == (512, 32) and final.expand.bias is None and final.norm.weight.shape == (32,)
    x = torch.randn(2, 3, 5, 32)
    assert expand(x).shape == (2, 6, 10, 16)
    assert final(x).shape == (2, 12, 20, 32)
    assert torch.allclose(expand(x), expand.norm(tokens_to_pixels(x @ expand.expand.weight.T, 2)))


# -------------------------------------------------------------------------------- sizes and channels
@pytest.mark.parametrize("size", [(224, 224), (256, 256), (320, 448)])
def test_swin_unet_t_runs_at_the_sizes_of_the_issue(swin_unet_t, size):
    with torch.no_grad():
        logits = swin_unet_t(torch.randn(1, 1, *size), mode="tensor")
    assert logits.shape == (1, 9, *size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("size", [(100, 75), (33, 47), (16, 16)])
def test_any_size(size):
    """Sides that are not multiples of 32 (or even of the patch): upsampled maps are cropped to their skips."""
    with torch.no_grad():
        logits = slim()(torch.randn(2, 1, *size))
    assert logits.shape == (2, 3, *size) and torch.isfinite(logits).all()


def test_in_chans():
    grey = torch.randn(1, 1, 64, 64)
    rgb_model = slim(in_chans=3).eval()
    with torch.no_grad():  # a grey image into a 3-channel model is repeated (the official wrapper does this)
        assert torch.equal(rgb_model(grey), rgb_model(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="expected 1 input channels"):
        slim()(torch.randn(1, 3, 64, 64))


def test_sdpa_and_reference_attention_agree():
    fast = slim().eval()
    reference = slim(attn_impl="reference").eval()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(1, 1, 96, 72)
    with torch.no_grad():
        assert torch.allclose(fast(x), reference(x), atol=1e-5)


# ------------------------------------------------------------------------------------------ decoder
def test_decoder_mirrors_the_encoder(swin_unet_t):
    """Official: decoder stage k mirrors encoder stage 2-k (depth, heads, stochastic-depth rates)."""
    encoder, decoder = swin_unet_t.backbone, swin_unet_t.decode_head
    assert decoder.in_channels == encoder.out_channels == [96, 192, 384, 768]
    assert [len(s.blocks) for s in decoder.stages] == [2, 2, 2]
    assert [s.blocks[0].attn.num_heads for s in decoder.stages] == [12, 6, 3]
    assert [s.upsample is not None for s in decoder.stages] == [True, True, False]
    for k, stage in enumerate(decoder.stages):
        mirrored = encoder.stages[2 - k].blocks
        assert [getattr(b.drop_path, "drop_prob", 0.0) for b in stage.blocks] == \
            [getattr(b.drop_path, "drop_prob", 0.0) for b in mirrored]
    assert sum(p.numel() for p in swin_unet_t.parameters()) == 27_165_828  # the paper's 27.17M (9 classes)


def test_up_stage_reuses_the_swin_stage_with_its_own_keys():
    """Decoder stages are Swin stages (no patch merging) joined to their skips; state-dict keys and parameter order
    (what optimizer states in checkpoints are stored by) are those of the official mapping."""
    stage = slim().decode_head.stages[0]
    assert isinstance(stage, SwinStage) and stage.downsample is None
    names = [name for name, _ in stage.named_parameters()]
    assert names[:2] == ["concat.weight", "concat.bias"]
    assert names[-3:] == ["upsample.expand.weight", "upsample.norm.weight", "upsample.norm.bias"]
    assert {name.split(".")[0] for name in names} == {"concat", "blocks", "upsample"}
    assert any(name.startswith("blocks.1.attn.qkv") for name in names)


def test_decoder_depths_are_configurable():
    model = SwinUnet(backbone=dict(SLIM, in_chans=1, drop_path_rate=0.3),
                     decode_head=dict(num_classes=2, depths=(1, 3, 2), window_size=4))
    stages = model.decode_head.stages
    assert [len(s.blocks) for s in stages] == [1, 3, 2]
    assert stages[0].blocks[0].window_size == 4
    assert len({getattr(b.drop_path, "drop_prob", 0.0) for b in stages[1].blocks}) == 2  # the last rate repeats
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_construction_checks():
    with pytest.raises(ValueError, match="in_channels"):
        SwinUnet(backbone=dict(SLIM), decode_head=dict(in_channels=[96, 192, 384, 768]))
    with pytest.raises(ValueError, match="out_norm"):
        SwinUnet(backbone=dict(SLIM, out_norm=True))
    with pytest.raises(ValueError, match="SwinUnetDecoder"):
        SwinUnet(backbone=dict(SLIM), decode_head=dict(type="UPerHead"))


# ------------------------------------------------------------------------------ training, inference
def _samples(labels: torch.Tensor) -> list[SegDataSample]:
    samples = []
    for label in labels:
        sample = SegDataSample(metainfo={"img_shape": tuple(label.shape), "ori_shape": tuple(label.shape)})
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def test_loss_and_backward():
    model = slim(num_classes=4).train()
    inputs = torch.randn(2, 1, 64, 48)
    labels = torch.randint(0, 4, (2, 64, 48))
    labels[:, :8] = 255
    losses = model(inputs, _samples(labels), mode="loss")
    assert set(losses) == {"loss_ce", "loss_dice", "acc_seg"}
    logits = model(inputs, mode="tensor")
    assert torch.allclose(losses["loss_ce"], 0.4 * F.cross_entropy(logits, labels, ignore_index=255))
    assert torch.allclose(losses["loss_dice"], 0.6 * SwinUnetDiceLoss()(logits, labels, 255))
    (losses["loss_ce"] + losses["loss_dice"]).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]  # every parameter is used (DDP needs it)
    assert grads["backbone.patch_embed.proj.weight"].abs().sum() > 0


def test_train_steps_lower_the_loss():
    """Through the data preprocessor (1-channel float slices), SGD as the official trainer."""
    model = slim(num_classes=2)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4))
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 32, 32, generator=gen) for _ in range(2)]
    labels = torch.stack([(img[0] > 0.5).long() for img in images])
    data = {"inputs": images, "data_samples": _samples(labels)}
    totals = [model.train_step(data, optim)["loss"].item() for _ in range(10)]
    assert totals[-1] < 0.75 * totals[0], totals


def test_predict_crops_unflips_and_resizes():
    model = slim(num_classes=3).eval()
    inputs = torch.randn(2, 1, 64, 64)
    samples = [SegDataSample(metainfo={"img_shape": (60, 64), "ori_shape": (120, 128), "flip": True}),
               SegDataSample(metainfo={"img_shape": (64, 64), "ori_shape": (64, 64)})]
    with torch.no_grad():
        out = model(inputs, samples, mode="predict")
        logits = model(inputs, mode="tensor")
    assert out[0].seg_logits.data.shape == (3, 120, 128) and out[0].pred_sem_seg.data.shape == (1, 120, 128)
    expected = F.interpolate(logits[:1, :, :60].flip(-1), size=(120, 128), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(out[0].seg_logits.data, expected, atol=1e-6)
    assert torch.equal(out[1].pred_sem_seg.data[0], logits[1].argmax(0))
    with torch.no_grad():
        assert model(inputs, mode="predict")[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_slide_and_tta_inference_through_test_cfg():
    """The segmentors share one predict: Swin-Unet gets sliding windows and flip TTA from its test_cfg."""
    torch.manual_seed(0)
    slide = SwinUnet(backbone={**SLIM, "in_chans": 1}, decode_head=dict(num_classes=3),
                     test_cfg=dict(mode="slide", crop_size=(32, 32), stride=(32, 32))).eval()
    inputs = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        out = slide(inputs, mode="predict")[0].seg_logits.data
        quarter = slide.encode_decode(inputs[:, :, 32:, :32])[0]
    assert out.shape == (3, 64, 64)
    torch.testing.assert_close(out[:, 32:, :32], quarter)  # stride = crop: each window is predicted alone
    tta = SwinUnet(backbone={**SLIM, "in_chans": 1}, decode_head=dict(num_classes=3),
                   test_cfg=dict(tta=dict(scales=[1.0], flip=True))).eval()
    tta.load_state_dict(slide.state_dict())
    with torch.no_grad():
        probs = tta(inputs, mode="predict")[0].seg_logits.data
        plain = slide.encode_decode(inputs).softmax(1)
        flipped = slide.encode_decode(inputs.flip(-1)).flip(-1).softmax(1)
    torch.testing.assert_close(probs, ((plain + flipped) / 2)[0])
    with pytest.raises(ValueError, match="crop_size"):
        SwinUnet(backbone=dict(SLIM), test_cfg=dict(mode="slide"))


def test_densekit_checkpoint_loads_through_init_models_loader(tmp_path):
    """``densekit.apis.init_model`` loads whole-model checkpoints with ``load_model_checkpoint``."""
    model = slim()
    path = tmp_path / "swin_unet.pth"
    torch.save({"meta": {}, "state_dict": model.state_dict()}, path)
    other = slim()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    load_model_checkpoint(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_activation_checkpointing_gives_the_same_gradients():
    inputs, labels = torch.randn(1, 1, 48, 48), torch.randint(0, 3, (1, 48, 48))
    grads = []
    for with_cp in (False, True):
        model = slim(with_cp=with_cp).train()
        assert model.decode_head.stages[0].with_cp is with_cp  # the decoder follows the encoder
        losses = model(inputs, _samples(labels), mode="loss")
        (losses["loss_ce"] + losses["loss_dice"]).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
