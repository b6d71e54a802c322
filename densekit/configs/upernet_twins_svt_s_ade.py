# UPerNet + Twins-SVT-S on ADE20K, 512x512 crops, 160k iterations: mmsegmentation's recipe
# twins_svt-s_uperhead_8x2_512x512_160k_ade20k (mmseg 1.x: twins_svt-s_uperhead_8xb2-160k_ade20k-512x512).
# mmsegmentation publishes 46.08 mIoU single-scale, 46.96 multi-scale + flip for ITS SVT backbone; densekit's
# differs (below), so this file has no published number ("none"). Runnable on its own:
#   python tools/train.py configs/upernet_twins_svt_s_ade.py
# Data pipeline, heads, schedule and runtime are the Swin-T recipe's (the base file), which are mmseg's here too.
# What differs from mmseg, and why:
# - The backbone is timm's twins_svt_small through TimmBackbone. mmseg's SVT (norm_after_stage=True) applies a
#   LayerNorm at the end of every stage IN the stream (stage i + 1 reads the normalised map); timm's Twins has no
#   such norms, and out_norm=True normalises only the returned maps. mmseg's Twins checkpoints therefore do not
#   convert into this model, and its LayerNorms use eps 1e-6 (timm) where mmseg's use 1e-5.
# - Odd input sizes are padded right/bottom to a multiple of 32 before the backbone (TimmBackbone's contract);
#   mmseg's patch embeddings pad each stage's map to its patch size ("corner" padding).
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# ImageNet Twins-SVT-S (timm twins_svt_small) as a local file; None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="twins_svt_small", drop_path_rate=0.2, out_norm=True, pretrained=pretrained),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)

optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # mmseg: no weight decay on the position-encoding generator (pos_block) and on norms.
    paramwise_cfg=dict(custom_keys={"pos_block": dict(decay_mult=0.0), "norm": dict(decay_mult=0.0)}),
)
# 2 images per process x 8 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(batch_size=2)
