# RPN + ResNet-50 + FPN on COCO 2017, 12 epochs: mmdetection 3.x's recipe rpn_r50_fpn_1x_coco
# (configs/rpn/rpn_r50_fpn_1x_coco.py over _base_/models/rpn_r50_fpn.py, coco_detection.py, schedule_1x.py).
# Published by mmdetection (their model zoo; not reproduced by densekit): AR@1000 58.2 on COCO val2017
# (COCOeval proposal recall, useCats=0), with torchvision's ImageNet ResNet-50. Runnable on its own:
#   python tools/train.py configs/rpn_r50_fpn_1x_coco.py
# 16 images per iteration: 8 GPUs x 2 (torchrun --nproc_per_node 8 tools/train.py ... --launcher pytorch);
# with fewer images per iteration scale the lr linearly (0.02 per 16 images).
# Differences from mmdetection: timm's ResNet-50 (the same architecture and parameter names as torchvision's,
# so torchvision's resnet50-*.pth loads as `pretrained`); no AspectRatioBatchSampler (mmdet-only);
# ProposalRecall computes COCOeval's numbers without pycocotools at evaluation time.
default_scope = "densekit"

data_root = "data/coco/"
# ImageNet ResNet-50 weights (timm or torchvision layout, a local file); None = random init.
pretrained = None

model = dict(
    type="RPN",
    data_preprocessor=dict(type="DetDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type="resnet50", frozen_stages=1, norm_eval=True, pretrained=pretrained),
    neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    rpn_head=dict(
        type="RPNHead",
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=dict(rpn=dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, ignore_iof_thr=-1),
        sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False)),
    # The RPN-only recipe keeps 2000 proposals per level before NMS (Faster R-CNN's RPN keeps 1000).
    test_cfg=dict(rpn=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadDetAnnotations"),
    dict(type="DetResize", scale=(1333, 800), keep_ratio=True),
    dict(type="DetRandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
# Annotations are loaded after the resize: they stay in original image coordinates, where recall is measured.
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="DetResize", scale=(1333, 800), keep_ratio=True),
    dict(type="LoadDetAnnotations"),
    dict(type="PackDetInputs"),
]

train_dataloader = dict(
    batch_size=2,  # per GPU; 8 GPUs x 2 = 16 images per iteration
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="CocoDataset", data_root=data_root, ann_file="annotations/instances_train2017.json",
                 data_prefix=dict(img="train2017/"), filter_empty_gt=True, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="CocoDataset", data_root=data_root, ann_file="annotations/instances_val2017.json",
                 data_prefix=dict(img="val2017/"), test_mode=True, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="ProposalRecall", proposal_nums=(100, 300, 1000))
test_evaluator = val_evaluator

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.0001))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", interval=1),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
log_processor = dict(by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
