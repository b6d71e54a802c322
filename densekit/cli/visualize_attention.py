"""Draw where a Swin block looks: window-attention weights of one stage, block and head as a heat map over an image.

The image is fed at its own size (resize large photos first); ``--stage S --block B`` pick the block (odd blocks
use shifted windows, which the map undoes so it lines up with the image) and ``--head H`` one head (default: the
mean over heads). With ``--query X Y`` (image pixels) the map shows the weights that pixel's token gives to every
key of its window (they sum to 1, the pixel is marked); without it, the mean attention each token receives from
the queries of its window. Writes the overlay PNG at the image's size and, with ``--save-npy``, the raw map on
the stage's feature grid as ``<out>.npy``.

Examples:
    densekit visualize-attention configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photo.png \\
        --stage 2 --block 1 --head 3 --query 120 64 --out attn_s2b1h3.png
    densekit visualize-attention configs/swin_unet_t_synapse.py slice.png --stage 0 --block 0 --out attn.png
    densekit visualize-attention --model swin_t swin_tiny_patch4_window7_224.pth photo.png --stage 1 --block 1 \\
        --out received.png --save-npy
    python tools/visualize_attention.py configs/upernet_swin_t_demo.py photo.png --out attn.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def _split_positionals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str | None, str | None,
                                                                                          str]:
    """``CONFIG [CKPT] IMAGE`` (or ``[CKPT] IMAGE`` with ``--model``) -> (config, checkpoint, image)."""
    items = list(args.inputs)
    expected = (1, 2) if args.model else (2, 3)
    if len(items) not in expected:
        usage = "[CKPT] IMAGE with --model" if args.model else "CONFIG [CKPT] IMAGE"
        parser.error(f"expected {usage}, got {len(items)} positional arguments: {items}")
    config = None if args.model else items.pop(0)
    image = items.pop()
    return config, (items[0] if items else None), image


def build_model(config: str | None, checkpoint: str | None, model_name: str | None, device: str,
                cfg_options: dict | None = None):
    """A model from a config (``densekit.apis.init_model``) or a bare densekit backbone by name."""
    if checkpoint is None:
        print("warning: no checkpoint given, the weights are random: the maps show an untrained model's attention",
              file=sys.stderr)
    if model_name:
        from .. import create_backbone

        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        return create_backbone(model_name, pretrained=checkpoint).to(device).eval()
    from ..inference.api import init_model

    return init_model(config, checkpoint, device=device, cfg_options=cfg_options)


def main(argv: list[str] | None = None) -> int:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(prog="densekit visualize-attention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="CONFIG [CKPT] IMAGE",
                        help="an UPerNet-Swin or Swin-Unet config, an optional checkpoint and the image")
    parser.add_argument("--model", help="a bare densekit Swin backbone by name (swin_t, swin_s, ...) instead of a "
                        "config; CKPT then is a backbone checkpoint in any layout densekit reads")
    parser.add_argument("--stage", type=int, default=0, help="Swin stage, 0..3 (default 0)")
    parser.add_argument("--block", type=int, default=0, help="block within the stage; odd = shifted (default 0)")
    parser.add_argument("--head", type=int, help="attention head (default: the mean over heads)")
    parser.add_argument("--query", type=int, nargs=2, metavar=("X", "Y"),
                        help="query pixel: draw the weights it gives (default: mean attention received)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--save-npy", action="store_true", help="also write the raw feature-grid map as <out>.npy")
    parser.add_argument("--interp", choices=["nearest", "bilinear"], default="nearest",
                        help="how tokens are spread over their pixels (default nearest: one block per token)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heat-map opacity (default 0.5)")
    parser.add_argument("--cmap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    config, checkpoint, image_path = _split_positionals(parser, args)

    from ..inference.attention_maps import attention_picture
    from ..visualization import write_image

    image = cv2.imread(image_path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"image {image_path} does not exist or is not an image OpenCV reads")
    model = build_model(config, checkpoint, args.model, args.device, args.cfg_options)
    try:
        picture, raw, maps = attention_picture(model, image, args.stage, args.block, args.head,
                                               tuple(args.query) if args.query else None, args.interp, args.alpha,
                                               args.cmap)
    except ValueError as error:  # a stage, block, head or query the model or image does not have
        parser.error(str(error))
    write_image(args.out, picture)
    kind = f"query ({args.query[0]}, {args.query[1]})" if args.query else "mean received"
    head = "mean of heads" if args.head is None else f"head {args.head}"
    print(f"stage {args.stage} block {args.block} ({head}, window {maps.window}, shift {maps.shift}, "
          f"{maps.height}x{maps.width} tokens of {maps.stride} px), {kind}: {args.out}")
    if args.save_npy:
        npy = Path(args.out).with_suffix(".npy")
        tmp = npy.with_name(f".{npy.stem}.tmp.npy")
        np.save(tmp, raw)
        tmp.replace(npy)
        print(f"raw map {raw.shape}: {npy}")
    return 0
