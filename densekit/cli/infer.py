"""Segment images, volumes or folders of either; or propose regions with an RPN config.

Images: ``<stem>_mask.png`` (class ids) and ``<stem>_overlay.png`` (with a legend of the classes) per image.
RPN configs: ``<stem>_proposals.png``
(the ``--top-k`` best proposals drawn, coloured by score) and ``<stem>_proposals.json`` (every proposal: ``boxes``
xyxy in image pixels and ``scores``, best first). Volumes (``.nii``, ``.nii.gz``,
``.npy.h5``; medical configs): ``<name>_pred.nii.gz`` with the source affine (``_pred.h5`` for h5 input) and
``<name>_montage.png``, slices run in batches with a progress bar per volume.

Examples:
    python tools/infer.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photos/ --out-dir preds
    python tools/infer.py configs/swin_unet_t_synapse.py swin_unet.pth scans/ --out-dir preds --window ct
    python tools/infer.py configs/swin_unet_t_synapse.py swin_unet.pth scans/ --out-dir preds --window ct --bf16
    python tools/infer.py configs/rpn_r50_fpn_1x_coco.py rpn_r50.pth street.jpg --out-dir proposals --top-k 30
    python tools/infer.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photos/ --out-dir preds --compile
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from densekit.cli.common import add_no_accel_argument, add_unsafe_load_argument, run_tool
from densekit.datasets.medical.io import is_volume_file
from densekit.fileio import save_atomically
from densekit.inference.api import inference_model, init_model
from densekit.inference.volume import segment_volume_files
from densekit.visualization import default_palette, draw_proposals, labelled_overlay, write_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(inputs: list[str]) -> list[Path]:
    """Files as given, folders expanded to the images inside (sorted); a missing path is an error."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise SystemExit(f"input {item} does not exist")
    if not found:
        raise SystemExit(f"no images found in {', '.join(inputs)}")
    return found


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def propose(model, images: list[Path], out_dir: Path, top_k: int) -> None:
    """Per image: the ``top_k`` proposals drawn (``<stem>_proposals.png``) and all of them as JSON."""
    for path in tqdm(images, desc="propose", unit="img"):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"could not read image {path}")
        pred = inference_model(model, image).pred_instances
        boxes, scores = pred.bboxes.cpu().numpy(), pred.scores.cpu().numpy()
        write_image(out_dir / f"{path.stem}_proposals.png", draw_proposals(image, boxes, scores, top_k))
        text = json.dumps({"image": str(path), "boxes": boxes.round(2).tolist(), "scores": scores.round(5).tolist()})
        save_atomically(out_dir / f"{path.stem}_proposals.json", lambda tmp, text=text: Path(tmp).write_text(text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="densekit infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", choices=["auto", "ct", "mr", "none"], default="auto",
                        help="volumes: intensity window (auto: CT for NIfTI, none for h5: Synapse stores it windowed)")
    parser.add_argument("--batch-size", type=int, default=16, help="volumes: slices per forward pass")
    parser.add_argument("--volume-resize", choices=["bilinear", "zoom"], default="bilinear",
                        help="volumes: bilinear = bicubic slices in, bilinear logits out; zoom = the official "
                             "Swin-Unet test's scipy zoom (cubic spline in, argmax, nearest labels out), exactly")
    parser.add_argument("--top-k", type=int, default=20, help="RPN configs: proposals drawn per image")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model's inference path (the first image, and each new size, compiles; "
                             "falls back to eager with a warning where compilation fails)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the model under torch.autocast bfloat16: about 2x faster on CPUs with bf16 matrix "
                             "units and on GPUs; a few boundary pixels may get another label than in fp32")
    add_unsafe_load_argument(parser)
    add_no_accel_argument(parser)
    args = parser.parse_args(argv)
    model = init_model(args.config, args.checkpoint, device=args.device, unsafe_load=args.unsafe_load,
                       compile=args.compile, accel=False if args.no_accel else None)
    autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.bf16)
    with autocast:
        _infer(model, args)


def _infer(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """The work of ``main`` on a loaded model: proposals, volumes or images, by config and file type."""
    if model.cfg.model.get("type") == "RPN":
        propose(model, list_images(args.images), Path(args.out_dir), args.top_k)
        return
    if any(is_volume_file(p) or (Path(p).is_dir() and not _has_images(Path(p))) for p in args.images):
        window = None if args.window == "none" else args.window
        for path in segment_volume_files(model, args.images, args.out_dir, window, args.batch_size,
                                         resize=args.volume_resize):
            print(f"wrote {path}")
        return
    classes = model.dataset_meta.get("classes", [])
    out_dir = Path(args.out_dir)
    for path in tqdm(list_images(args.images), desc="infer", unit="img"):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"could not read image {path}")
        pred = inference_model(model, image).pred_sem_seg.data[0].cpu().numpy()
        palette = model.dataset_meta.get("palette") or default_palette(max(len(classes), int(pred.max()) + 1))
        write_image(out_dir / f"{path.stem}_mask.png", pred.astype("uint8"))
        write_image(out_dir / f"{path.stem}_overlay.png", labelled_overlay(image, pred, palette, classes))


if __name__ == "__main__":
    run_tool(main)
