# UPerNet + Swin V2-T on ADE20K, 512x512 crops, 160k iterations: configs/upernet_swin_t_ade.py (mmsegmentation's
# Swin-T UPerNet recipe: AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01, 1500 warm-up iterations, poly
# decay, 16 images per iteration) with a Swin V2-T backbone at window 16, loading the ImageNet-1K window-8 / 256
# checkpoint (official swinv2_tiny_patch4_window8_256.pth, timm swinv2_tiny_window8_256) unresized: its
# position-bias MLP reads coordinates normalised by the pretrained window 8 (pretrained_window_size=8), as the
# Swin V2 paper moves window-8 weights to window 16 for downstream tasks.
# Weight decay as the official Swin V2 code's set_weight_decay: none on 1-D parameters (norms, biases, q_bias,
# v_bias) nor on the position-bias MLP (cpb_mlp) and logit_scale (its skip keywords); V2 has neither
# absolute_pos_embed nor relative_position_bias_table, the V1 recipe's other two keys.
# Published number: none. mmsegmentation never shipped Swin V2 and no reference UPerNet + Swin V2-T ADE20K
# result exists; this config is not reproduced against one. Runnable on its own:
#   python tools/train.py configs/upernet_swinv2_t_ade.py
_base_ = "upernet_swin_t_ade.py"

# ImageNet Swin V2-T window-8 / 256 weights in any layout densekit reads (official, timm, HF, mmpretrain);
# None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="swinv2_t", window_size=16, pretrained_window_size=8, drop_path_rate=0.3,
                  pretrained=pretrained),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        # The official skip keywords; a custom key wins over the three rules below for the parameters it names.
        custom_keys={"cpb_mlp": dict(decay_mult=0.0), "logit_scale": dict(decay_mult=0.0)},
        # The official `len(param.shape) == 1 or name.endswith(".bias")`: norms, biases, q_bias and v_bias.
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
    ),
)
