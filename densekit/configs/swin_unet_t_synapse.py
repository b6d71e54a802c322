# Swin-Unet (tiny) on Synapse multi-organ CT, 224x224 axial slices: the official Swin-Unet recipe
# (HuCaoFighting/Swin-Unet, configs/swin_tiny_patch4_window7_224_lite.yaml + train.py): 9 classes,
# SGD lr 0.05, momentum 0.9, weight decay 1e-4, poly power 0.9 per iteration, batch 24,
# 150 epochs, encoder from ImageNet Swin-T mirrored into the decoder. Runnable on its own:
#   python tools/train.py configs/swin_unet_t_synapse.py \
#       --cfg-options model.backbone.pretrained=swin_tiny_patch4_window7_224.pth
# Published reference (Swin-Unet paper, not reproduced here): DSC 79.13, HD95 21.55 (voxels).
default_scope = "densekit"

data_root = "data/Synapse"  # train_npz/, test_vol_h5/, lists/lists_Synapse/{train,test_vol}.txt
img_size = (224, 224)
num_classes = 9
# ImageNet Swin-T weights (official, timm or mmseg layout), or an official Swin-Unet checkpoint; None = random.
pretrained = None

model = dict(
    type="SwinUnet",
    # Slices arrive windowed to [0, 1] as one float channel: no further normalisation.
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[0.0], std=[1.0], bgr_to_rgb=False, size=img_size),
    backbone=dict(type="SwinTransformer", embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24),
                  window_size=7, in_chans=1, drop_path_rate=0.2, pretrained=pretrained),
    decode_head=dict(type="SwinUnetDecoder", in_channels=[96, 192, 384, 768], num_classes=num_classes,
                     # The official trainer's 0.4 * torch CrossEntropyLoss() + 0.6 * its DiceLoss(softmax=True).
                     loss_decode=[dict(type="CrossEntropyLoss", loss_weight=0.4, avg_non_ignore=True),
                                  dict(type="SwinUnetDiceLoss", loss_weight=0.6)]),
)

train_pipeline = [dict(type="RandomGenerator", output_size=img_size), dict(type="PackMedicalInputs")]
test_pipeline = [dict(type="ResizeSlice", output_size=img_size), dict(type="PackMedicalInputs")]

train_dataloader = dict(
    batch_size=24,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="SynapseDataset", data_root=data_root, split="train", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=24,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="SynapseDataset", data_root=data_root, split="test_vol", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
# protocol='swin-unet' reproduces the official table (HD95 in voxels, its empty-mask rules).
val_evaluator = dict(type="MedicalMetric", protocol="densekit")
test_evaluator = val_evaluator

max_epochs = 150
optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4))
# Updated every iteration, as the official `lr = base_lr * (1 - iter / max_iter) ** 0.9`.
param_scheduler = [
    dict(type="PolyLR", power=0.9, eta_min=0.0, by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True)
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=50)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", interval=50, max_keep_ckpts=3),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="nccl"))
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=1234)  # the official seed
