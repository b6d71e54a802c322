# UPerNet + Swin-T on a folder of your own, in mmsegmentation's custom-dataset layout:
#   my_data/images/{train,val}/*.<one image suffix>   my_data/masks/{train,val}/*.png (same names, values 0..K-1,
#   255 = ignore)   my_data/classes.txt (one name per line)   my_data/palette.txt (optional, "R G B" per class)
# Train it with the folder named on the command line; the classes, the image suffix and every head's
# num_classes then come from the folder:
#   densekit train upernet_swin_t_custom --data my_data --work-dir work_dirs/my_data
# Without --data it reads data_root below with the classes written here. The model is the ADE20K recipe's
# (configs/upernet_swin_t_ade.py) with 256x256 crops, plain BN and a 4000-iteration AdamW schedule; set
# `pretrained` to an ImageNet Swin-T file (any layout densekit converts) unless you train from scratch.
default_scope = "densekit"

data_root = "data/my_data"
classes = ("background", "foreground")  # --data reads DIR/classes.txt instead
num_classes = len(classes)
crop_size = (256, 256)
max_iters = 4000
pretrained = None

model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, size=crop_size, pad_val=0, seg_pad_val=255),
    backbone=dict(type="swin_t", window_size=7, drop_path_rate=0.3, pretrained=pretrained),
    decode_head=dict(type="UPerHead", in_channels=[96, 192, 384, 768], pool_scales=(1, 2, 3, 6), channels=512,
                     dropout_ratio=0.1, num_classes=num_classes, norm="BN", align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", loss_weight=1.0)),
    auxiliary_head=dict(type="FCNHead", in_channels=384, in_index=2, channels=256, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=num_classes, norm="BN", align_corners=False,
                        loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4)),
    test_cfg=dict(mode="whole"),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(512, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]

train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type="SegDataset", data_root=data_root, img_dir="images/train", ann_dir="masks/train",
                 img_suffix=".png", seg_map_suffix=".png", classes=classes, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="SegDataset", data_root=data_root, img_dir="images/val", ann_dir="masks/val",
                 img_suffix=".png", seg_map_suffix=".png", classes=classes, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"], per_class=True)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"absolute_pos_embed": dict(decay_mult=0.0),
                                    "relative_position_bias_table": dict(decay_mult=0.0),
                                    "norm": dict(decay_mult=0.0)}),
)
# An override of train_cfg.max_iters moves both schedulers and the intervals below with it.
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=max_iters // 20),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=max_iters // 20, end=max_iters, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters // 10)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", by_epoch=False, interval=max_iters // 10, max_keep_ckpts=2,
                    save_best="mIoU"),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
