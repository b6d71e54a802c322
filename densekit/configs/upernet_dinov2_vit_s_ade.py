# UPerNet + DINOv2 ViT-S/14 + Feature2Pyramid on ADE20K, 512x512 crops, 160k iterations: densekit's recipe (the
# MAE-UPerNet one with DINOv2's ViT-S/14). Published result for this recipe: none. Runnable on its own:
#   python tools/train.py configs/upernet_dinov2_vit_s_ade.py
# The ViT keeps DINOv2's 37x37 position grid (img_size 518); a 512 crop is padded to 518 inside the backbone (whole
# 14-pixel patches), giving 37x37 maps at stride 14; Feature2Pyramid makes strides 3.5, 7, 14 and 28 of them.
# Plain AdamW at lr 1e-4, no layer-wise lr decay (no published DINOv2 recipe to take a rate from).
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# Official DINOv2 file (dinov2_vits14_pretrain.pth; mask_token dropped) or timm's vit_small_patch14_dinov2
# weights, a local file; None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="vit_small_patch14_dinov2", img_size=518, out_indices=(2, 5, 8, 11),
                  drop_path_rate=0.1, pretrained=pretrained),
    neck=dict(type="Feature2Pyramid", embed_dim=384, rescales=(4, 2, 1, 0.5), norm="SyncBN"),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=512),
    auxiliary_head=dict(in_channels=384, in_index=2),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={"pos_embed": dict(decay_mult=0.0), "cls_token": dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
