"""Export a segmentor (UPerNet ``EncoderDecoder`` or ``SwinUnet``) to ONNX and check it against PyTorch.

The graph is the whole-image forward: input ``image`` ``(B, C, H, W)`` float32, the raw pixels a config's
pipeline gives the model (0..255, BGR for colour images read with OpenCV, the stored intensities for medical
slices); the data preprocessor's normalisation (``(x - mean) / std``, BGR->RGB) is inside the graph. Output
``logits`` ``(B, K, H, W)`` at the input size; ``argmax(1)`` is the class map. Sliding-window and TTA settings
of ``test_cfg`` are not exported (run the graph per crop / scale yourself).

After writing the file, onnxruntime runs it on a random input and the max abs difference to PyTorch is printed;
above 1e-3 the command fails (exit 1). With ``--dynamic`` batch, height and width are symbolic and a second
size (``--check-shape``, default H+64 x W+32, batch +1) is checked too. Swin picks a smaller window and no
shift for a stage no larger than its window, a choice the traced graph keeps: ``--dynamic`` therefore needs
every stage larger than the window at the export size (H, W >= 225 for window 7 and 4 stages; 256 is a good
choice) and refuses smaller sizes; export those without ``--dynamic``, one graph per size.

Examples:
    densekit export configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth --shape 256 256 --dynamic
    densekit export configs/swin_unet_t_synapse.py swin_unet.pth --shape 224 224 --out swin_unet.onnx
    python tools/export.py configs/upernet_swin_t_ade.py upernet_swin_t.pth --shape 512 512 --dynamic

Needs ``pip install densekit[export]`` (onnx, onnxruntime). Uses the TorchScript-tracing exporter; see
densekit/export.py for why not the dynamo one.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from densekit.cli.arguments import positive_int

TOLERANCE = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densekit export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="segmentor config, e.g. configs/upernet_swin_t_ade.py")
    parser.add_argument("checkpoint", help="densekit checkpoint of that config (see densekit convert)")
    parser.add_argument("--shape", type=positive_int, nargs=2, required=True, metavar=("H", "W"),
                        help="export input size")
    parser.add_argument("--batch", type=positive_int, default=1, help="export batch size (default: %(default)s)")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    parser.add_argument("--check-shape", type=positive_int, nargs=2, metavar=("H", "W"),
                        help="with --dynamic: the second size checked (default: H+64 W+32)")
    parser.add_argument("--out", help="ONNX file to write (default: the checkpoint's path with .onnx)")
    parser.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--cfg-options", nargs="+", action=_dict_action(), help="override config keys, key=value")
    args = parser.parse_args(argv)
    if args.check_shape and not args.dynamic:
        parser.error("--check-shape needs --dynamic (a static graph takes only the export size)")
    return args


def _dict_action():
    from mmengine.config import DictAction  # mmengine, not torch: --help stays fast

    return DictAction


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from densekit.inference.export import (  # loads torch
        MissingExportDependency,
        check_onnx,
        export_onnx,
        load_segmentor,
    )

    model = load_segmentor(args.config, args.checkpoint, args.cfg_options)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    height, width = args.shape
    try:
        export_onnx(model, out, (args.batch, height, width), dynamic=args.dynamic, opset=args.opset)
    except (MissingExportDependency, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    shapes = [(args.batch, height, width)]
    if args.dynamic:
        check_h, check_w = args.check_shape or (height + 64, width + 32)
        shapes.append((args.batch + 1, check_h, check_w))
    worst = 0.0
    for shape in shapes:
        diff = check_onnx(model, out, shape)
        print(f"input {shape}: max |onnxruntime - torch| = {diff:.3e}")
        worst = max(worst, diff)
    passed = worst <= TOLERANCE
    print(f"check {'OK' if passed else 'FAILED'}: max abs diff {worst:.3e} (tolerance {TOLERANCE:g})")
    return 0 if passed else 1


if __name__ == "__main__":
    from densekit.cli.common import run_tool

    run_tool(main)
