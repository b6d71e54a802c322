"""Segment images, volumes or folders of either; or propose regions with an RPN config.

Images: ``<stem>_mask.png`` (class ids) and ``<stem>_overlay.png`` (with a legend of the classes) per image.
RPN configs: ``<stem>_proposals.png``
(the ``--top-k`` best proposals drawn, coloured by score) and ``<stem>_proposals.json`` (every proposal: ``boxes``
xyxy in image pixels and ``scores``, best first). Volumes (``.nii``, ``.nii.gz``,
``.npy.h5``; medical configs): ``<name>_pred.nii.gz`` with the source affine (``_pred.h5`` for h5 input) and
``<name>_montage.png``, slices run in batches with a progress bar per volume; NIfTI intensities are windowed as
the model was trained (its config's dataset ``window``: ``ct``, ``mr`` or a range; ``--window`` overrides), and
the window used is printed.

Large images are segmented by sliding windows streamed through a bounded buffer (``densekit.inference.tiled``:
never a full-resolution float map per class): ``--mode slide --crop H W --stride H W`` asks for it; ``--mode auto``
(the default) picks it for images above 2048x2048 pixels (crop and stride from the config's ``test_cfg`` when it
slides, else 512 and 384) and the config's own ``test_cfg`` otherwise; a bar counts tiles.

Inputs are checked before the model loads. A file that cannot be read (a broken PNG, ``notes.txt``) stops a run
on one file; in a folder it is skipped with a counted warning and the rest are written (``--on-error``).

Examples:
    python tools/infer.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photos/ --out-dir preds
    python tools/infer.py configs/swin_unet_t_synapse.py swin_unet.pth scans/ --out-dir preds --window ct
    python tools/infer.py configs/swin_unet_t_synapse.py swin_unet.pth scans/ --out-dir preds --window ct --bf16
    python tools/infer.py configs/rpn_r50_fpn_1x_coco.py rpn_r50.pth street.jpg --out-dir proposals --top-k 30
    python tools/infer.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photos/ --out-dir preds --compile
    densekit infer upernet_swin_t_demo work_dirs/demo/iter_200.pth big.png --out-dir preds --mode slide \\
        --crop 512 512 --stride 384 384
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from mmengine.config import DictAction
from tqdm import tqdm

from densekit.cli.arguments import positive_int
from densekit.cli.common import UserError, add_no_accel_argument, add_unsafe_load_argument, run_tool
from densekit.datasets.medical.io import is_volume_file
from densekit.fileio import save_atomically
from densekit.inference.api import inference_model, init_model, test_pipeline_steps
from densekit.inference.tiled import AUTO_CROP, AUTO_SLIDE_PIXELS, AUTO_STRIDE, stream_slide_labels, streamable
from densekit.inference.volume import segment_volume_files
from densekit.visualization import default_palette, draw_proposals, labelled_overlay, write_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(inputs: list[str]) -> list[Path]:
    """Files as given; folders expanded to the files inside (sorted, hidden ones left out): images, and any
    other file, which ``--on-error`` then skips or stops at; a missing path is an error."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in found) and not any(map(is_volume_file, found)):
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {', '.join(inputs)}")
    return found


def check_inputs(inputs: list[str]) -> None:
    """Every input exists: checked before the model loads."""
    missing = [item for item in inputs if not Path(item).exists()]
    if missing:
        raise FileNotFoundError(f"input {', '.join(missing)} does not exist; pass image or volume files, or "
                                "folders of them")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


class Skipper:
    """``--on-error``: ``'stop'`` raises a user error naming the file; ``'skip'`` warns and counts."""

    def __init__(self, policy: str) -> None:
        self.policy, self.skipped = policy, []

    def __call__(self, path: Path, reason: str) -> None:
        if self.policy == "stop":
            raise UserError(f"cannot read {path}: {reason} (--on-error skip goes on with the other files)")
        self.skipped.append(f"{path.name} ({reason})")

    def report(self, total: int) -> None:
        if self.skipped:
            print(f"warning: skipped {len(self.skipped)} of {total} files that could not be read: "
                  f"{'; '.join(self.skipped[:10])}" + (" ..." if len(self.skipped) > 10 else ""), file=sys.stderr)


def read_image(path: Path, skip: Skipper) -> np.ndarray | None:
    """The BGR uint8 image at ``path``, or None (reported to ``skip``) for a file OpenCV cannot decode."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        skip(path, f"not an image ({path.suffix or 'no suffix'})")
        return None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        skip(path, "OpenCV could not decode it (truncated or not an image)")
    return image


def propose(model, images: list[Path], out_dir: Path, top_k: int, skip: Skipper) -> None:
    """Per image: the ``top_k`` proposals drawn (``<stem>_proposals.png``) and all of them as JSON."""
    for path in tqdm(images, desc="propose", unit="img"):
        image = read_image(path, skip)
        if image is None:
            continue
        pred = inference_model(model, image).pred_instances
        boxes, scores = pred.bboxes.cpu().numpy(), pred.scores.cpu().numpy()
        write_image(out_dir / f"{path.stem}_proposals.png", draw_proposals(image, boxes, scores, top_k))
        text = json.dumps({"image": str(path), "boxes": boxes.round(2).tolist(), "scores": scores.round(5).tolist()})
        save_atomically(out_dir / f"{path.stem}_proposals.json", lambda tmp, text=text: Path(tmp).write_text(text))
        tqdm.write(f"wrote {out_dir / f'{path.stem}_proposals.png'}")
    skip.report(len(images))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densekit infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="cpu", help="default: %(default)s")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="config overrides, key=value (e.g. model.test_cfg.mode=slide)")
    parser.add_argument("--mode", choices=["auto", "whole", "slide"], default="auto",
                        help="images: slide = streamed sliding windows in bounded memory; auto (default): slide "
                             f"above {AUTO_SLIDE_PIXELS} pixels, else the config's test_cfg")
    parser.add_argument("--crop", type=positive_int, nargs=2, metavar=("H", "W"),
                        help="sliding-window size (default: the config's test_cfg.crop_size, else 512 512)")
    parser.add_argument("--stride", type=positive_int, nargs=2, metavar=("H", "W"),
                        help="sliding-window step (default: the config's test_cfg.stride, else 384 384)")
    parser.add_argument("--tile-batch", type=positive_int, default=1,
                        help="sliding windows per forward pass (default: %(default)s)")
    parser.add_argument("--on-error", choices=["stop", "skip"],
                        help="a file that cannot be read: stop, or skip it with a warning (default: skip when an "
                             "input is a folder, stop for files)")
    parser.add_argument("--window", choices=["auto", "ct", "mr", "none"], default="auto",
                        help="volumes: intensity window (auto: the window of the config's dataset for NIfTI, as "
                             "the model was trained; none for h5: Synapse stores it windowed)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="volumes: slices per forward pass")
    parser.add_argument("--volume-resize", choices=["bilinear", "zoom"], default="bilinear",
                        help="volumes: bilinear = bicubic slices in, bilinear logits out; zoom = the official "
                             "Swin-Unet test's scipy zoom (cubic spline in, argmax, nearest labels out), exactly")
    parser.add_argument("--top-k", type=positive_int, default=20, help="RPN configs: proposals drawn per image")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's inference path (the first image, and each new size, compiles; "
                             "falls back to eager with a warning where compilation fails)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the model under torch.autocast bfloat16: about 2x faster on CPUs with bf16 matrix "
                             "units and on GPUs; a few boundary pixels may get another label than in fp32")
    add_unsafe_load_argument(parser)
    add_no_accel_argument(parser)
    args = parser.parse_args(argv)
    if (args.crop or args.stride) and args.mode == "whole":
        parser.error("--crop and --stride apply to --mode slide or auto")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_inputs(args.images)  # before the model loads: a typo costs no minute of loading
    if args.on_error is None:
        args.on_error = "skip" if any(Path(p).is_dir() for p in args.images) else "stop"
    model = init_model(args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options,
                       unsafe_load=args.unsafe_load, compile=args.compile, accel=False if args.no_accel else None)
    autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16)
    with autocast:
        _infer(model, args)


def _infer(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """The work of ``main`` on a loaded model: proposals, volumes or images, by config and file type."""
    skip = Skipper(args.on_error)
    if model.cfg.model.get("type") == "RPN":
        propose(model, list_images(args.images), Path(args.out_dir), args.top_k, skip)
        return
    if any(is_volume_file(p) or (Path(p).is_dir() and not _has_images(Path(p))) for p in args.images):
        window = None if args.window == "none" else args.window
        for path in segment_volume_files(model, args.images, args.out_dir, window, args.batch_size,
                                         resize=args.volume_resize, on_error=args.on_error):
            print(f"wrote {path}")
        return
    images = list_images(args.images)
    for path in tqdm(images, desc="infer", unit="img"):
        image = read_image(path, skip)
        if image is not None:
            for written in segment_image(model, image, path, Path(args.out_dir), args):
                tqdm.write(f"wrote {written}")
    skip.report(len(images))


def slide_settings(model: torch.nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> tuple | None:
    """``(crop, stride)`` when this image is to be streamed in sliding windows, else None (``model.predict``)."""
    test_cfg = getattr(model, "test_cfg", None) or {}
    if args.mode == "whole" or test_cfg.get("tta"):
        return None
    config_slides = test_cfg.get("mode") == "slide"
    if args.mode == "auto" and shape[0] * shape[1] <= AUTO_SLIDE_PIXELS and not args.crop:
        return None
    reason = streamable(test_pipeline_steps(model.cfg))
    if reason is not None:
        if args.mode == "slide":
            raise UserError(f"--mode slide: {reason}; run --mode whole, or with a config whose test pipeline "
                            "keeps the image size")
        return None
    crop = tuple(args.crop or (test_cfg["crop_size"] if config_slides else AUTO_CROP))
    stride = tuple(args.stride or (test_cfg["stride"] if config_slides else AUTO_STRIDE))
    return crop, stride


def segment_image(model: torch.nn.Module, image: np.ndarray, path: Path, out_dir: Path,
                  args: argparse.Namespace) -> list[Path]:
    """``<stem>_mask.png`` (class ids) and ``<stem>_overlay.png`` of one BGR image; returns the paths written."""
    slide = slide_settings(model, image.shape, args)
    if slide is not None:
        pred = stream_slide_labels(model, image, *slide, batch_size=args.tile_batch, desc=path.name)
    else:
        pred = inference_model(model, image).pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
    classes = model.dataset_meta.get("classes", [])
    palette = model.dataset_meta.get("palette") or default_palette(max(len(classes), int(pred.max()) + 1))
    mask = write_image(out_dir / f"{path.stem}_mask.png", pred)
    overlay = write_image(out_dir / f"{path.stem}_overlay.png", labelled_overlay(image, pred, palette, classes))
    return [mask, overlay]


if __name__ == "__main__":
    run_tool(main)
