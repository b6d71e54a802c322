# UPerNet + RegNetY-4.0GF on ADE20K, 512x512 crops, 160k iterations. densekit's own recipe:
# mmsegmentation has no RegNet UPerNet (its RegNet configs are mmdetection's), so there is no published
# mmseg result for this model. It is the ResNet-50 UPerNet recipe (configs/upernet_r50_ade.py: SGD
# lr 0.01, poly 0.9, batch 16) with the RegNetY-4.0GF backbone (about ResNet-50's FLOPs); weight decay
# 5e-5 as mmdetection's RegNet configs use. Runnable on its own:
#   python tools/train.py configs/upernet_regnety_040_ade.py
_base_ = ["./upernet_swin_t_ade.py"]

# ImageNet RegNetY-4.0GF (timm regnety_040) as a local file; None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="regnety_040", pretrained=pretrained),
    decode_head=dict(in_channels=[128, 192, 512, 1088]),
    auxiliary_head=dict(in_channels=512),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-5),
    clip_grad=None,
)
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)]
# 4 images per process x 4 processes = 16 images per iteration.
train_dataloader = dict(batch_size=4)
sync_bn = "torch"  # mmengine converts the backbone's BatchNorms when training distributed
