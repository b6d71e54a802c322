"""Convert a checkpoint to densekit: a Swin backbone (``--model``) or a whole model (``--config``: UPerNet,
Swin-Unet or RPN).

Examples:
    python tools/convert.py swin_tiny_patch4_window7_224.pth swin_t.pth --model swin_t --verify
    python tools/convert.py mae_pretrain_vit_base.pth vit_b_mae.pth --model vit_b --verify
    python tools/convert.py upernet_swin_t.pth swin_t_w12.safetensors --model swin_t --window-size 12
    python tools/convert.py swinv2_tiny_patch4_window8_256.pth v2_t.pth --model swinv2_t --window-size 16 --verify
    python tools/convert.py upernet_swin_tiny_ade20k.pth upernet_swin_t.pth --config configs/upernet_swin_t_ade.py
    python tools/convert.py upernet-convnext-tiny/ upernet_convnext_t.pth --config configs/upernet_convnext_t_ade.py
    python tools/convert.py fasterrcnn_resnet50_fpn.pth rpn_r50_tv.pth --config configs/rpn_r50_fpn_1x_coco.py

``--model``: a Swin backbone checkpoint (official, timm, mmseg/mmpretrain, SimMIM or densekit layout); for
``swinv2_*`` official, timm, HF, mmpretrain, SimMIM or densekit V2 files, run at ``--window-size`` with the
pretrained windows the source's name or meta says (written to the new file's meta); a plain ViT (``vit_s/b/l`` or a
timm ViT name: official MAE, DINO, DINOv2, timm, mmseg ``VisionTransformer``/``MAE``).
``--verify`` runs timm's Swin on the source weights and densekit on the written file with the same
random input and fails (exit 1) if any stage differs by more than 1e-4. When ``--window-size`` or
``--in-chans`` change the model, timm is built with the new window / channels and given densekit's
resized bias tables / adapted patch kernel, so the check covers everything else. Swin V2 is compared with
timm's Swin V2 built with the same window and pretrained windows (nothing is resized in V2).

``--config``: a whole UPerNet checkpoint (mmsegmentation ``upernet_swin_*``, HuggingFace
``UperNetForSemanticSegmentation`` .bin/.safetensors/.pth or its save_pretrained folder, or densekit),
an official Swin-Unet checkpoint, or a whole RPN (mmdetection ``rpn_r50_fpn_1x_coco``, torchvision
``fasterrcnn_resnet50_fpn``: its RPN, the second stage dropped), loaded strictly into the config's model and
saved as ``{'meta', 'state_dict'}``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from mmengine.config import DictAction

from densekit.cli.common import add_unsafe_load_argument
from densekit.convert import BIAS_RESIZE, CheckpointError
from densekit.inference.convert_files import convert_file, convert_segmentor_file
from densekit.inference.verify import VerifyUnsupported, is_vit, verify_conversion, verify_vit_conversion

TOLERANCE = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densekit convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="source: .pth/.pt/.bin/.ckpt/.safetensors (or a HF folder with --config)")
    parser.add_argument("dst", help="densekit checkpoint to write (.safetensors or an mmengine-style .pth)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="densekit backbone, e.g. swin_t, swin_b (backbone conversion)")
    target.add_argument("--config", help="model config, e.g. configs/upernet_swin_t_ade.py (whole model)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="config overrides (with --config)")
    parser.add_argument("--window-size", type=int, help="window of the new model (bias tables are resized)")
    parser.add_argument("--in-chans", type=int, help="input channels of the new model (patch kernel adapted)")
    parser.add_argument("--bias-resize", choices=BIAS_RESIZE, default="bicubic", help="bias-table interpolation")
    add_unsafe_load_argument(parser)
    parser.add_argument("--verify", action="store_true", help=f"compare with timm's Swin (tolerance {TOLERANCE:g})")
    args = parser.parse_args(argv)
    backbone_only = [f"--{name.replace('_', '-')}" for name in ("window_size", "in_chans", "verify")
                     if getattr(args, name)]
    if args.config and backbone_only:
        parser.error(f"{', '.join(backbone_only)} only apply to backbone conversion (--model)")
    if args.model and args.cfg_options:
        parser.error("--cfg-options only applies to segmentor conversion (--config)")
    return args


@contextlib.contextmanager
def _without_load_reports():
    """Hide the INFO log of the loads inside ``verify_conversion``: it builds densekit's Swin without output norms
    (timm's stage features have none) and its report ("dropped 8 out_norms") would contradict the conversion's
    own, printed above, which counts the norms the written file holds. Warnings still show."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def verify(args: argparse.Namespace) -> int:
    try:
        if is_vit(args.model) and args.in_chans:
            raise VerifyUnsupported("no timm comparison for a ViT with another in_chans")
        with _without_load_reports():
            if is_vit(args.model):
                diffs = verify_vit_conversion(args.src, args.dst, args.model)
            else:
                diffs = verify_conversion(args.src, args.dst, args.model, args.window_size, args.in_chans)
    except VerifyUnsupported as error:
        print(f"verify skipped: {error}")
        return 0
    print("verify: timm's stage features have no output norms, so both run without them (out_norms not compared)")
    for stage, diff in enumerate(diffs):
        print(f"stage {stage}: max |densekit - timm| = {diff:.3e}")
    worst = max(diffs)
    passed = worst <= TOLERANCE
    print(f"verify {'OK' if passed else 'FAILED'}: max abs diff {worst:.3e} (tolerance {TOLERANCE:g})")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.config:
            report = convert_segmentor_file(args.src, args.dst, args.config, args.cfg_options, args.bias_resize,
                                            unsafe_load=args.unsafe_load)
        else:
            report = convert_file(args.src, args.dst, args.model, args.window_size, args.in_chans, args.bias_resize,
                                  unsafe_load=args.unsafe_load)
    except (FileNotFoundError, CheckpointError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    print(f"wrote {args.dst}")
    return verify(args) if args.verify else 0


if __name__ == "__main__":
    sys.exit(main())
