# UPerNet + MAE ViT-B/16 + Feature2Pyramid on ADE20K, 512x512 crops, 160k iterations: after mmsegmentation's recipe
# mae-base_upernet_8xb2-amp-160k_ade20k-512x512 (0.x: upernet_mae-base_fp16_8x2_512x512_160k_ade20k).
# Published by mmsegmentation (their model zoo; not reproduced by densekit): mIoU 48.13 single-scale,
# 48.70 multi-scale + flip, from MAE's mae_pretrain_vit_base.pth. Runnable on its own:
#   python tools/train.py configs/upernet_mae_vit_b_ade.py
# Differences from mmseg (so the number above is theirs, for a close but not identical model):
# - mmseg's MAE backbone is BEiT-style: a relative position bias per block (zero-initialised), no q/k/v bias and
#   LayerScale (init 1.0). densekit's is the plain ViT that MAE pretrained (timm's: absolute position embedding,
#   q/k/v bias, no LayerScale), so MAE's official file loads with nothing left at random. mmseg's fine-tuned
#   MAE-UPerNet checkpoint (learned bias tables) is refused by name, not approximated.
# - mmseg uses AmpOptimWrapper (fp16); this file keeps OptimWrapper so it runs on CPU: pass --amp on a GPU.
_base_ = ["./upernet_swin_t_ade.py"]

crop_size = (512, 512)
# Official MAE pretraining file (mae_pretrain_vit_base.pth: {'model': ...}, decoder dropped) or any ViT layout
# densekit reads, a local file; None = random init. Its 14x14 position embedding is resized to 32x32 as MAE does.
pretrained = None

model = dict(
    backbone=dict(_delete_=True, type="vit_b", img_size=512, out_indices=(3, 5, 7, 11), drop_path_rate=0.1,
                  pretrained=pretrained),
    neck=dict(type="Feature2Pyramid", embed_dim=768, rescales=(4, 2, 1, 0.5), norm="SyncBN"),
    decode_head=dict(in_channels=[768, 768, 768, 768], channels=768),
    auxiliary_head=dict(in_channels=768, in_index=2),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)

# mmseg's lr decay: layer id 0 for patch embedding, class token and position embedding, block i -> i + 1, the
# rest (neck, heads) the top; lr = 1e-4 * 0.65 ** (13 - layer id); no weight decay on 1-D parameters and biases.
optim_wrapper = dict(
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
# 2 images per process x 8 processes = 16 images per iteration (mmseg's setting).
train_dataloader = dict(batch_size=2)
