"""Segment images or folders: writes ``<stem>_mask.png`` (class ids) and ``<stem>_overlay.png`` per image.

Example:
    python tools/infer.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_300.pth photos/ --out-dir preds
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
from tqdm import tqdm

from densekit.apis import inference_model, init_model
from densekit.cli import run_tool
from densekit.visualization import default_palette, overlay, write_image

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = init_model(args.config, args.checkpoint, device=args.device)
    classes = model.dataset_meta.get("classes", [])
    out_dir = Path(args.out_dir)
    for path in tqdm(list_images(args.images), desc="infer", unit="img"):
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"could not read image {path}")
        pred = inference_model(model, image).pred_sem_seg.data[0].cpu().numpy()
        palette = model.dataset_meta.get("palette") or default_palette(max(len(classes), int(pred.max()) + 1))
        write_image(out_dir / f"{path.stem}_mask.png", pred.astype("uint8"))
        write_image(out_dir / f"{path.stem}_overlay.png", overlay(image, pred, palette))


if __name__ == "__main__":
    run_tool(main)
