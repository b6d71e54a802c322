# RPN + ViT-B/16 + ViTDet's SimpleFeaturePyramid on COCO 2017, 12 epochs: densekit's recipe (mmdetection's
# rpn_r50_fpn_1x_coco with the ResNet-50 + FPN replaced by ViTDet's plain ViT-B and simple pyramid). Published
# result for this recipe: none. Runnable on its own:
#   python tools/train.py configs/rpn_vit_b_sfp_coco.py
# The pyramid is built from the last block alone (ViTDet): deconvs / max-pool to strides 4..32, LayerNorm'd 1x1 and
# 3x3 convs, and a stride-64 level by max-pool (ViTDet's LastLevelMaxPool), the five levels the RPN anchors need.
# ViTDet trains with AdamW (lr 1e-4, weight decay 0.1) and a layer-wise lr decay of 0.7; this recipe keeps the
# RPN's plain AdamW, no weight decay on the position embedding, class token, norms and biases.
_base_ = ["./rpn_r50_fpn_1x_coco.py"]

# ViT-B/16 weights (official MAE, timm, ...; a local file); None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="vit_b", img_size=1024, out_indices=(11,), drop_path_rate=0.1,
                  pretrained=pretrained),
    neck=dict(_delete_=True, type="SimpleFeaturePyramid", in_channels=[768], out_channels=256,
              scale_factors=(4.0, 2.0, 1.0, 0.5), input_stride=16, norm="LN", top_block=True),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={"pos_embed": dict(decay_mult=0.0), "cls_token": dict(decay_mult=0.0)}),
    clip_grad=None,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
