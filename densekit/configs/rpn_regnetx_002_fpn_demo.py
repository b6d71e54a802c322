# RPN + RegNetX-200MF + FPN (random init) on densekit's generated demo detection data: the segmentation
# demo's 256x256 scenes with a box per visible object (5 classes, class-agnostic here), 200 training and
# 50 validation images in COCO format, generated into data/densekit_demo_det on first use. Sized for a
# 2-core CPU: 300 iterations from scratch take ~1.5 minutes on an idle machine (plus ~10 s to generate the
# data the first time) and reach AR@100 0.568, AR@1000 0.623 on the validation split (proposal average
# recall, COCO IoUs 0.50:0.95; 0.475 after 100 iterations, 0.560 after 200). Runnable on its own:
#   python tools/train.py configs/rpn_regnetx_002_fpn_demo.py
# The architecture of configs/rpn_r50_fpn_1x_coco.py (anchors, assigner, sampler, losses, proposal
# settings unchanged) with timm's regnetx_002 instead of ResNet-50 and a 64-channel FPN and head instead
# of 256: ResNet-18 learns no faster per iteration here and costs about twice as much, ResNet-50 ~8x.
default_scope = "densekit"

data_root = "data/densekit_demo_det"  # generated on first use (DemoDetDataset(generate=True))
channels = 64
max_iters = 300
val_interval = 100
warmup_iters = 30

model = dict(
    type="RPN",
    data_preprocessor=dict(type="DetDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type="regnetx_002"),
    neck=dict(type="FPN", in_channels=[24, 56, 152, 368], out_channels=channels, num_outs=5),
    rpn_head=dict(
        type="RPNHead",
        in_channels=channels,
        feat_channels=channels,
        anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type="L1Loss", loss_weight=1.0),
    ),
    train_cfg=dict(rpn=dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, ignore_iof_thr=-1),
        sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
        allowed_border=-1, pos_weight=-1, debug=False)),
    test_cfg=dict(rpn=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadDetAnnotations"),
    dict(type="DetRandomFlip", prob=0.5),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadDetAnnotations"),
    dict(type="PackDetInputs"),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(type="DemoDetDataset", data_root=data_root, split="train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="DemoDetDataset", data_root=data_root, split="val", test_mode=True, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="ProposalRecall", proposal_nums=(100, 300, 1000))
test_evaluator = val_evaluator

optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="CosineAnnealingLR", eta_min=0.0, by_epoch=False, begin=warmup_iters, end=max_iters),
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
visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0)
