# UPerNet + ResNet-50 on ADE20K, 512x512 crops, 160k iterations: mmsegmentation's recipe
# upernet_r50_512x512_160k_ade20k (mmseg 1.x: upernet_r50_4xb4-160k_ade20k-512x512).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 42.05 single-scale,
# 42.78 multi-scale + flip, with ImageNet ResNet-50-C weights. Runnable on its own:
#   python tools/train.py configs/upernet_r50_ade.py
# Data pipeline, heads and runtime are the Swin-T recipe's (the base file); the model differs only in
# the backbone and in_channels, the schedule is mmseg's SGD one. mmseg's backbone is ResNetV1c (deep
# 3-conv stem, stride in the 3x3 conv): timm's resnet50c is the same network. Its BatchNorms become
# SyncBatchNorm in distributed runs (sync_bn below), as mmseg's SyncBN backbone.
_base_ = ["./upernet_swin_t_ade.py"]

# ImageNet ResNet-50-C (timm resnet50c) as a local file; None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="resnet50c", pretrained=pretrained),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4),
    clip_grad=None,
)
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)]
# 4 images per process x 4 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(batch_size=4)
sync_bn = "torch"  # mmengine converts the backbone's BatchNorms when training distributed
