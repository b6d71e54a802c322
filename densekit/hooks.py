"""mmengine hooks densekit adds: colour overlays of test predictions, proposals drawn on test images."""
from __future__ import annotations

from pathlib import Path

import cv2
from mmengine.hooks import Hook

from .registry import HOOKS
from .visualization import default_palette, draw_proposals, overlay, write_image


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


@HOOKS.register_module()
class DetProposalHook(Hook):
    """After each test iteration of an RPN, write ``<out_dir>/<image stem>.png``: the ``top_k`` proposals
    (coloured by score) and the ground-truth boxes (white) over the image.

    Args:
        out_dir: folder for the pictures.
        top_k: how many of the best proposals to draw.
    """

    def __init__(self, out_dir: str, top_k: int = 20) -> None:
        self.out_dir = Path(out_dir)
        self.top_k = top_k

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for sample in outputs or []:
            image = cv2.imread(sample.img_path)
            pred = sample.pred_instances
            gt = sample.gt_instances.bboxes.cpu().numpy() if "gt_instances" in sample else None
            picture = draw_proposals(image, pred.bboxes.cpu().numpy(), pred.scores.cpu().numpy(), self.top_k, gt)
            write_image(self.out_dir / f"{Path(sample.img_path).stem}.png", picture)
