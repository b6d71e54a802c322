# UPerNet + ViT-B/16 + MultiLevelNeck on ADE20K, 512x512 crops, 80k iterations: mmsegmentation's recipe
# vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512 (0.x: upernet_vit-b16_mln_512x512_80k_ade20k).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 47.71 single-scale,
# 49.51 multi-scale + flip, with ImageNet-21k-pretrained ViT-B/16 (timm's vit_base_patch16_224). Runnable on its own:
#   python tools/train.py configs/upernet_vit_b_mln_ade.py
# Data pipeline, heads and runtime are the Swin-T recipe's (the base file). Differences from mmseg:
# - the ViT is timm's (densekit wraps it): the same weights and arithmetic as mmseg's VisionTransformer; inputs of
#   another size than 512 interpolate the position embedding through timm (antialiased when shrinking, where
#   mmseg's resize_pos_embed is not; growing, as in ADE's 512-short-side test images, the two agree).
# - mmseg's VisionTransformer pads partial patches bottom/right; densekit does the same.
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# ViT-B/16 weights in any layout densekit reads (timm, official, mmseg; a local file); None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="vit_b", img_size=512, out_indices=(2, 5, 8, 11), drop_path_rate=0.0,
                  final_norm=False, pretrained=pretrained),
    # ViT-B maps at stride 16 -> strides 4, 8, 16, 32
    neck=dict(type="MultiLevelNeck", in_channels=[768, 768, 768, 768], out_channels=768, scales=(4, 2, 1, 0.5)),
    decode_head=dict(in_channels=[768, 768, 768, 768], channels=512),
    auxiliary_head=dict(in_channels=768, in_index=3),
    test_cfg=dict(mode="whole"),
)

# AdamW, no weight decay for the position embedding, class token and norms (mmseg's custom_keys).
optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"pos_embed": dict(decay_mult=0.0), "cls_token": dict(decay_mult=0.0),
                                    "norm": dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
# 2 images per process x 8 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(batch_size=2)
