# UPerNet + Swin-S on ADE20K, 512x512 crops, 160k iterations: mmsegmentation's recipe
# upernet_swin_small_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K
# (mmseg 1.x: swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 47.72 single-scale,
# 49.24 multi-scale + flip, with ImageNet-1K Swin-S weights. Runnable on its own:
#   python tools/train.py configs/upernet_swin_s_ade.py
# Everything but the backbone depth is the Swin-T recipe (the base file); as in mmseg, in_channels
# stay [96, 192, 384, 768].
_base_ = ["./upernet_swin_t_ade.py"]

# ImageNet-1K Swin-S (swin_small_patch4_window7_224) in any layout densekit reads; None = random init.
pretrained = None

model = dict(
    backbone=dict(type="swin_s", window_size=7, drop_path_rate=0.3, pretrained=pretrained),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
