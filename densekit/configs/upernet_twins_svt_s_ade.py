# UPerNet + Twins-SVT-S on ADE20K, 512x512 crops, 160k iterations: mmsegmentation's recipe
# twins_svt-s_uperhead_8x2_512x512_160k_ade20k (mmseg 1.x: twins_svt-s_uperhead_8xb2-160k_ade20k-512x512).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 46.08 single-scale,
# 46.96 multi-scale + flip. Runnable on its own:
#   python tools/train.py configs/upernet_twins_svt_s_ade.py
# Data pipeline, heads, schedule and runtime are the Swin-T recipe's (the base file), which are mmseg's here too.
# The backbone is mmseg's SVT-S (twins_svt_s: densekit.backbones.twins.TwinsSVT on timm's twins_svt_small modules):
# norm_after_stage=True (a LayerNorm on every stage's tokens inside the stream), LayerNorm eps 1e-5, mmseg's masked
# locally-grouped attention on grids that are not window multiples and per-stage 'corner' padding, so mmseg's
# published Twins UPerNet converts (tools/convert.py SRC DST --config configs/upernet_twins_svt_s_ade.py) and runs
# as in mmseg (tests/convert/test_convert_twins.py).
# Pretrained weights as mmseg: its ImageNet alt_gvt_small file (mmseg's layout; head and final norm dropped, norm_list
# at unit init as in mmseg), or timm's twins_svt_small file.
# What differs from mmseg: nothing in the model; mmseg trains with 8 GPUs x 2 images, as batch_size below assumes.
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# ImageNet Twins-SVT-S as a local file (mmseg's alt_gvt_small_20220308-7e1c3695.pth or timm's twins_svt_small);
# None = random init.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="twins_svt_s", norm_after_stage=True, drop_path_rate=0.2, pretrained=pretrained),
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
