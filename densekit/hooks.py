"""mmengine hooks densekit adds: stop at the first non-finite loss, colour overlays of test predictions,
proposals drawn on test images."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import torch
from mmengine.hooks import Hook

from .registry import HOOKS
from .visualization import default_palette, draw_proposals, overlay, write_image


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the iteration, the terms and the
    last checkpoint written before it."""


def _value(value: object) -> float:
    return float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first iteration whose loss (any term) is NaN or infinite.

    Runs before every other ``after_train_iter`` hook (priority ``VERY_HIGH``), so ``CheckpointHook``
    never saves the broken state: the last ``iter_N.pth`` written before it stays the latest checkpoint,
    and ``--resume`` continues from there. ``densekit.apis.build_runner`` adds this hook to every run.
    Raises ``NonFiniteLossError`` naming the iteration (1-based, as in the log and ``iter_N.pth``), the
    non-finite terms (e.g. ``decode.loss_ce``), the batch's images and that checkpoint.
    """

    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        values = {name: _value(value) for name, value in (outputs or {}).items() if "loss" in name}
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if not bad:
            return
        terms = {name: value for name, value in bad.items() if name != "loss"} or bad  # the total follows its terms
        from mmengine.runner import find_latest_checkpoint

        latest = find_latest_checkpoint(runner.work_dir) if runner.work_dir else None
        images = [getattr(sample, "img_path", None) for sample in (data_batch or {}).get("data_samples", [])]
        images = [str(path) for path in images if path]
        raise NonFiniteLossError(
            f"non-finite loss at iteration {runner.iter + 1}: "
            + ", ".join(f"{name}={value}" for name, value in terms.items())
            + ". Training stopped before saving this state; the last good checkpoint is "
            + (f"{latest} (resume from it with --resume)" if latest else "none (none was written yet)")
            + ". Common causes: a learning rate too high (lower it or lengthen the warmup), no gradient clipping "
            "(optim_wrapper.clip_grad), or a bad batch"
            + (f" (images: {', '.join(images[:4])}{' ...' if len(images) > 4 else ''})" if images else "")
        )


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
