# UPerNet + Swin-B (window 12, ImageNet-1K 384x384 pretraining) on ADE20K, 512x512 crops, 160k
# iterations: mmsegmentation's recipe upernet_swin_base_patch4_window12_512x512_160k_ade20k_pretrain_384x384_1K
# (mmseg 1.x: swin-base-patch4-window12-in1k-384x384-pre_upernet_8xb2-160k_ade20k-512x512).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 48.35 single-scale,
# 49.65 multi-scale + flip. Runnable on its own:
#   python tools/train.py configs/upernet_swin_b_ade.py
# Everything but the backbone is the Swin-T recipe (the base file).
_base_ = ["./upernet_swin_t_ade.py"]

# ImageNet-1K Swin-B at 384 (swin_base_patch4_window12_384) in any layout densekit reads; None = random
# init. A window-7 checkpoint works too: its bias tables are resized to window 12 on load.
pretrained = None

model = dict(
    backbone=dict(
        type="swin_b",  # embed 128, depths 2-2-18-2, heads 4-8-16-32
        window_size=12,
        pretrain_img_size=384,
        drop_path_rate=0.3,
        pretrained=pretrained,
    ),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512),
)
