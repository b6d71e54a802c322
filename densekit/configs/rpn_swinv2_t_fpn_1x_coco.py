# RPN + Swin V2-T + FPN on COCO 2017, 12 epochs: configs/rpn_swin_t_fpn_1x_coco.py (configs/rpn_r50_fpn_1x_coco.py
# with mmdetection's Swin optimizer recipe: AdamW lr 1e-4, weight decay 0.05, 1000 linear warm-up iterations,
# steps at epochs 8 and 11; one _base_ level, so the V1 file's settings are repeated here) with a Swin V2-T
# backbone at window 16, loading the ImageNet-1K window-8 / 256 checkpoint unresized (pretrained_window_size=8:
# the position-bias MLP reads coordinates normalised by the window the weights were trained at).
# Weight decay as the official Swin V2 code's set_weight_decay: none on 1-D parameters (norms, biases, q_bias,
# v_bias) nor on the position-bias MLP (cpb_mlp) and logit_scale (its skip keywords); V2 has neither
# absolute_pos_embed nor relative_position_bias_table, the V1 recipe's other two keys.
# Published number: none. mmdetection never shipped Swin V2 nor an RPN-only Swin result; this config is not
# reproduced against a reference number. Runnable on its own:
#   python tools/train.py configs/rpn_swinv2_t_fpn_1x_coco.py
# 16 images per iteration: 8 GPUs x 2.
_base_ = "rpn_r50_fpn_1x_coco.py"

# ImageNet Swin V2-T window-8 / 256 weights in any layout densekit reads (official, timm, HF, mmpretrain);
# None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="swinv2_t", window_size=16, pretrained_window_size=8, drop_path_rate=0.2,
                  out_indices=(0, 1, 2, 3), pretrained=pretrained),
    neck=dict(in_channels=[96, 192, 384, 768]),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        # The official skip keywords; a custom key wins over the three rules below for the parameters it names.
        custom_keys={"cpb_mlp": dict(decay_mult=0.0), "logit_scale": dict(decay_mult=0.0)},
        # The official `len(param.shape) == 1 or name.endswith(".bias")`: norms, biases, q_bias and v_bias.
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
    ),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
