# UPerNet + ConvNeXt-T on ADE20K, 512x512 crops, 160k iterations: mmsegmentation's recipe
# upernet_convnext_tiny_fp16_512x512_160k_ade20k (mmseg 1.x: convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 46.11 single-scale,
# 46.62 multi-scale + flip, with ImageNet-1K ConvNeXt-T weights. Runnable on its own:
#   python tools/train.py configs/upernet_convnext_t_ade.py [--amp]
# Data pipeline, heads and runtime are the Swin-T recipe's (the base file). What differs from mmseg:
# - Same lr decay as mmseg: LearningRateDecayOptimizerConstructor (densekit.engine.optim, mmseg's rules over
#   densekit's parameter names), decay_rate 0.9, stage_wise, num_layers 6: stem and downsamples lr x 0.9^7,
#   stage i x 0.9^(6-i), heads and output norms x 1; 1-D parameters and biases get no weight decay.
# - mmseg uses AmpOptimWrapper (fp16, dynamic loss scale) on GPU; this file keeps OptimWrapper so it runs
#   on CPU too: pass --amp to tools/train.py for mixed precision on a GPU.
# - mmseg's ConvNeXt (mmpretrain) starts layer scale at 1.0, timm's at 1e-6; the pretrained weights
#   overwrite it, so only a random-init run differs.
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# ImageNet-1K ConvNeXt-T (timm convnext_tiny) as a local file; None = random init.
pretrained = None

model = dict(
    # timm's convnext_tiny; out_norm adds the LayerNorm per output stage that mmseg's ConvNeXt has.
    backbone=dict(_delete_=True, type="convnext_tiny", drop_path_rate=0.4, out_norm=True, pretrained=pretrained),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="LearningRateDecayOptimizerConstructor",
    paramwise_cfg=dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
# 2 images per process x 8 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(batch_size=2)
