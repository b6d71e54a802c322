# Swin-Unet on Swin V2 (tiny) on Synapse multi-organ CT, 224x224 axial slices: the Swin-Unet recipe of
# swin_unet_t_synapse.py (the base file: data, SGD lr 0.05 / momentum 0.9 / weight decay 1e-4, poly 0.9 per
# iteration, batch 24, 150 epochs, 0.4 CE + 0.6 Dice) with a Swin V2 encoder and Swin V2 decoder stages
# (res-post-norm blocks, scaled cosine attention, continuous position bias; PatchExpand unchanged), encoder from
# an ImageNet Swin V2-T mirrored into the decoder as the V1 Swin-Unet does. Runnable on its own:
#   python tools/train.py configs/swin_unet_v2_t_synapse.py \
#       --cfg-options model.backbone.pretrained=swinv2_tiny_patch4_window8_256.pth
# Published reference: none (no peer has this model: neither the Swin-Unet authors nor mmsegmentation, timm or HF).
_base_ = ["./swin_unet_t_synapse.py"]

# ImageNet Swin V2-T weights (official, timm or HF layout; e.g. swinv2_tiny_patch4_window8_256), or a densekit
# Swin-Unet V2 checkpoint; None = random init. A Swin V1 file is refused by name.
pretrained = None

# Why 224 with window 7 and pretrained_window_size 8: 224 keeps the V1 recipe's slices (and its published
# protocol), and window 7 divides every stage's map at 224 (56, 28, 14, 7), so nothing is padded and the 7x7
# bottleneck is one window, as in V1 Swin-Unet. The V2 tiny checkpoints were trained at window 8 (256 px; every
# stage, the last being 8x8): their position-bias MLP reads coordinates normalised by that window, so
# pretrained_window_size=8 moves them to window 7 without interpolating anything (Swin V2's own transfer rule).
model = dict(
    version=2,
    backbone=dict(type="SwinTransformerV2", embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
                  window_size=7, pretrained_window_size=8, in_chans=1, drop_path_rate=0.2, pretrained=pretrained),
    decode_head=dict(type="SwinUnetV2Decoder", in_channels=[96, 192, 384, 768]),
)

# The official Swin V2 code (set_weight_decay with no_weight_decay_keywords) exempts from weight decay every 1-D
# parameter (norms, biases, the q and v biases), the position-bias MLP (cpb_mlp, weights included) and the logit
# scales. mmengine's norm_decay_mult / bias_decay_mult cover LayerNorms and parameters named `bias`; q_bias,
# v_bias, cpb_mlp and logit_scale need custom_keys (matched as substrings of the parameter names).
optim_wrapper = dict(
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            "logit_scale": dict(decay_mult=0.0),
            "cpb_mlp": dict(decay_mult=0.0),
            "q_bias": dict(decay_mult=0.0),
            "v_bias": dict(decay_mult=0.0),
        },
    ),
)
