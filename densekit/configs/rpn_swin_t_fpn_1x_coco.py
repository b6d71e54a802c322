# RPN + Swin-T + FPN on COCO 2017, 12 epochs: configs/rpn_r50_fpn_1x_coco.py with a Swin-T backbone and
# mmdetection's Swin recipe for the optimizer (mask_rcnn_swin-t-p4-w7_fpn_1x_coco: AdamW lr 1e-4,
# weight decay 0.05 except on position embeddings, relative-position-bias tables and norms, 1000 linear
# warm-up iterations, steps at epochs 8 and 11). mmdetection publishes no RPN-only Swin-T result; this
# config is not reproduced against a reference number. Runnable on its own:
#   python tools/train.py configs/rpn_swin_t_fpn_1x_coco.py
# 16 images per iteration: 8 GPUs x 2.
_base_ = "rpn_r50_fpn_1x_coco.py"

# ImageNet Swin-T weights in any layout densekit reads (official, timm, mmseg); None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="swin_t", window_size=7, drop_path_rate=0.2, out_indices=(0, 1, 2, 3),
                  pretrained=pretrained),
    neck=dict(in_channels=[96, 192, 384, 768]),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            "absolute_pos_embed": dict(decay_mult=0.0),
            "relative_position_bias_table": dict(decay_mult=0.0),
            "norm": dict(decay_mult=0.0),
        }
    ),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
