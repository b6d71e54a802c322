# LR-ASPP + MobileNetV3-Large on Cityscapes, 512x1024 crops, 320k iterations: mmsegmentation's recipe
# lraspp_m-v3-d8_512x1024_320k_cityscapes (mmseg 1.x: mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024),
# published result: 69.54 mIoU single-scale (70.89 multi-scale + flip) on Cityscapes val, for mmseg's own trained
# model. Runnable on its own:
#   python tools/train.py configs/lraspp_mobilenetv3_large_cityscapes.py
# Backbone as mmseg's "d8": timm's MobileNetV3-Large (mobilenetv3_large_100) through TimmBackbone with
# output_stride=8 (its last stages dilated), levels 0, 1, 4 = mmseg's out_indices (1, 3, 16): 16, 24 and 960
# channels at strides 2, 4 and 8; the head is mmseg's (channels 128, dropout 0.1, image pool kernel 49 stride
# (16, 20) on the 64x128 map of a 512x1024 crop, logits at stride 2).
# What differs from mmseg, and why:
# - Starting weights: timm's ImageNet MobileNetV3-Large weights are not mmseg's converted ones
#   (open-mmlab://contrib/mobilenet_v3_large), so 69.54 is the recipe's number, not one measured from this file.
# - mmseg's BatchNorms use eps 0.001; the head's do here too (norm_eps), timm's backbone keeps its 1e-5.
# - Like mmseg's file, the poly schedule is schedule_160k's (ends at 160k, lr 1e-4 after) while training
#   runs 320k iterations.
default_scope = "densekit"

data_root = "data/cityscapes"
crop_size = (512, 1024)
num_classes = 19
# ImageNet MobileNetV3-Large (timm mobilenetv3_large_100) as a local file; None = random init.
pretrained = None

model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        size=crop_size,
        pad_val=0,
        seg_pad_val=255,
    ),
    backbone=dict(type="mobilenetv3_large_100", output_stride=8, out_indices=(0, 1, 4), pretrained=pretrained),
    decode_head=dict(
        type="LRASPPHead",
        in_channels=(16, 24, 960),
        in_index=(0, 1, 2),
        channels=128,
        branch_channels=(32, 64),
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm="SyncBN",
        norm_eps=0.001,
        pool_kernel=49,
        pool_stride=(16, 20),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0),
    ),
    test_cfg=dict(mode="whole"),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 1024), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
# Cityscapes' 19 train ids (gtFine *_labelTrainIds.png, made by cityscapesscripts' createTrainIdLabelImgs).
classes = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
dataset = dict(type="SegDataset", data_root=data_root, classes=classes, img_suffix="_leftImg8bit.png",
               seg_map_suffix="_gtFine_labelTrainIds.png")

# 4 images per process x 4 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(dataset, img_dir="leftImg8bit/train", ann_dir="gtFine/train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(dataset, img_dir="leftImg8bit/val", ann_dir="gtFine/val", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001),
                     clip_grad=None)
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=320000, val_interval=32000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", by_epoch=False, interval=32000, max_keep_ckpts=3),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
