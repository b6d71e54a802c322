"""mmengine hooks densekit adds: colour overlays of test predictions."""
from __future__ import annotations

from pathlib import Path

import cv2
from mmengine.hooks import Hook

from .registry import HOOKS
from .visualization import default_palette, overlay, write_image


@HOOKS.register_module()
class SegOverlayHook(Hook):
    """After each test iteration, write ``<out_dir>/<image stem>.png``: the prediction over the image.

    Args:
        out_dir: folder for the overlays.
        alpha: opacity of the colours.
    """

    def __init__(self, out_dir: str, alpha: float = 0.5) -> None:
        self.out_dir = Path(out_dir)
        self.alpha = alpha

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        meta = runner.test_dataloader.dataset.metainfo
        for sample in outputs or []:
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            palette = meta.get("palette") or default_palette(max(len(meta.get("classes", [])), int(pred.max()) + 1))
            image = cv2.imread(sample.img_path)
            write_image(self.out_dir / f"{Path(sample.img_path).stem}.png", overlay(image, pred, palette, self.alpha))
