# UPerNet + Swin-T (random init) on densekit's generated demo data: 6 classes, 256x256 scenes,
# 96 training and 24 validation images, generated into data/densekit_demo on first use. Sized for a
# 2-core CPU: `make demo` (tools/demo.py) trains it from scratch in a few minutes, validates every
# `val_interval` iterations, and writes overlays and loss/mIoU curves under work_dirs/demo.
# Runnable on its own too:
#   python tools/train.py configs/upernet_swin_t_demo.py
# The same architecture as configs/upernet_swin_t_ade.py with a narrower head (128 channels, not 512),
# plain BN instead of SyncBN, 128x128 crops and a short, high-lr AdamW schedule.
default_scope = "densekit"

data_root = "data/densekit_demo"  # generated on first use (DemoDataset(generate=True))
crop_size = (128, 128)
num_classes = 6
max_iters = 200
val_interval = 40
warmup_iters = 20

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
    backbone=dict(type="swin_t", window_size=7, drop_path_rate=0.1),
    decode_head=dict(
        type="UPerHead",
        in_channels=[96, 192, 384, 768],
        pool_scales=(1, 2, 3, 6),
        channels=128,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm="BN",
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0),
    ),
    auxiliary_head=dict(
        type="FCNHead",
        in_channels=384,
        in_index=2,
        channels=64,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm="BN",
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4),
    ),
    test_cfg=dict(mode="whole"),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(256, 256), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type="DemoDataset", data_root=data_root, img_dir="images/training",
                 ann_dir="annotations/training", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="DemoDataset", data_root=data_root, img_dir="images/validation",
                 ann_dir="annotations/validation", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"], per_class=True)  # IoU.<class> for `densekit plot`
test_evaluator = val_evaluator

# No paramwise_cfg (decay-free norms) here: from scratch it changes nothing visible, and mmengine
# logs one line per parameter for it, which would bury the demo's progress lines.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=5.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=warmup_iters, end=max_iters, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
# Writes <work_dir>/<timestamp>/vis_data/scalars.json, which the demo's curve plot reads.
visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
log_processor = dict(by_epoch=False)
log_level = "INFO"
# densekit's CPU fast paths (densekit.accel: Winograd convolutions, the unfolded patch embedding, fused and tiled
# inference in validation) while training: this recipe trains on the CPU.
accel = True
load_from = None
resume = False
randomness = dict(seed=0)
