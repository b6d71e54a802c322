"""mmengine hooks densekit adds: stop at the first non-finite loss, process memory in CPU training logs, densekit's
CPU fast paths installed on the runner's model, crash-safe checkpoints, colour overlays of test predictions,
proposals drawn on test images."""
from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from unittest.mock import patch

import cv2
import torch
from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper

from .. import accel
from ..fileio import atomic_open, save_atomically
from ..registry import HOOKS
from ..visualization import default_palette, draw_proposals, panels_with_legend, write_image


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


def resident_memory_mb() -> float:
    """This process's resident set size in MiB (``/proc/self/statm``; 0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@HOOKS.register_module()
class CpuMemoryHook(Hook):
    """Put the process's resident memory (MiB) into every training log line as ``rss_mb``.

    mmengine's logger reports memory only on CUDA (``memory``, the allocator's peak); on the CPU the resident
    set is what grows when something leaks or a batch is too large. ``densekit.apis.build_runner`` adds this
    hook to runs without CUDA.
    """

    priority = "LOW"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        runner.message_hub.update_scalar("train/rss_mb", round(resident_memory_mb()))


@HOOKS.register_module()
class AccelHook(Hook):
    """Install densekit's CPU fast paths (``densekit.accel.optimize``) on the runner's model before the run:
    training, validation and test alike.

    ``densekit.engine.runner.build_runner`` adds it when the config says ``accel = True`` (CPU training recipes)
    and ``test`` adds it on CPU runs unless asked not to. After each validation it drops what the fast paths
    cached from the weights (``accel.clear_caches``: oneDNN-packed linear weights, folded attention masks): the
    next optimizer step makes them stale, and they would otherwise stay allocated through training (one copy of
    every linear weight: 105 MiB for Swin-T).
    """

    priority = "VERY_HIGH"  # before any other hook runs the model

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        accel.optimize(model)

    def after_val_epoch(self, runner, metrics=None) -> None:
        accel.clear_caches()


@HOOKS.register_module()
class SegOverlayHook(Hook):
    """After each test iteration, write ``<out_dir>/<image stem>.png``: the panels ``image | ground truth |
    prediction`` (``comparison_panel``; without the ground-truth panel where the sample has none or it is not
    at the prediction's size), with a legend of the classes either shows.

    Args:
        out_dir: folder for the pictures.
        alpha: opacity of the colours.
    """

    def __init__(self, out_dir: str, alpha: float = 0.5) -> None:
        self.out_dir = Path(out_dir)
        self.alpha = alpha

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        meta = runner.test_dataloader.dataset.metainfo
        for sample in outputs or []:
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            gt = sample.gt_sem_seg.data[0].cpu().numpy() if "gt_sem_seg" in sample else None
            gt = gt if gt is not None and gt.shape == pred.shape else None
            palette = meta.get("palette") or default_palette(max(len(meta.get("classes", [])), int(pred.max()) + 1))
            write_image(self.out_dir / f"{Path(sample.img_path).stem}.png",
                        panels_with_legend(cv2.imread(sample.img_path), gt, pred, palette, meta.get("classes", ()),
                                           self.alpha))


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


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that writes ``iter_N.pth`` and ``last_checkpoint`` atomically and makes
    ``--resume`` continue the random stream the interrupted run was on.

    mmengine writes the checkpoint with ``torch.save`` straight into its final name and then overwrites
    ``last_checkpoint`` in place, so a kill at the wrong moment leaves a truncated checkpoint, or a pointer to
    one, that ``--resume`` then fails on. Here both go to a hidden temporary file in the same folder first and
    are renamed with ``os.replace`` (atomic on POSIX and Windows): a reader sees the old file or the complete
    new one. Remote ``out_dir`` backends (``s3://``, ...) keep mmengine's behaviour. Arguments as
    ``CheckpointHook``; configs name it in ``default_hooks.checkpoint``.

    mmengine's resume replays the data loader up to the checkpoint's iteration, which replays the numpy/random
    draws of the transforms, but it restores no torch RNG: dropout and drop path would draw different masks
    than an uninterrupted run. The checkpoint therefore also keeps the torch (and CUDA) RNG state under
    ``rng_state``, put back before the first iteration after resuming. With ``--deterministic`` a killed and
    resumed run then logs the same losses as one that was never stopped (tests/engine/test_crash_safety.py). Ranks
    share one seed (mmengine's default ``diff_rank_seed=False``), so rank 0's state stands for all.
    """

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_state"] = state
        checkpoint["meta"]["rng_state_iter"] = checkpoint["meta"].get("iter")

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called for load_from too: the state is applied only if training continues at the saved iteration.
        self._pending_rng = (checkpoint.get("meta", {}).get("rng_state_iter"), checkpoint.get("rng_state"))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        saved_iter, state = getattr(self, "_pending_rng", (None, None))
        self._pending_rng = (None, None)
        if state is None or saved_iter != runner.iter:
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        save = runner.save_checkpoint
        # mmengine offers no seam for either write: an instance attribute shadows ``Runner.save_checkpoint``
        # for this call, and the module-level name ``open`` that writes ``last_checkpoint`` is swapped for one
        # that renames on close. tests/engine/test_crash_safety.py fails if a new mmengine writes around them.
        runner.save_checkpoint = partial(_save_atomically, save)
        try:
            with patch("mmengine.hooks.checkpoint_hook.open", _open_for_checkpoint_hook, create=True):
                super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            del runner.save_checkpoint


def _save_atomically(save, out_dir: str, filename: str, *args, **kwargs) -> None:
    """``runner.save_checkpoint(out_dir, filename, ...)`` through ``save_atomically``: written under a hidden
    temporary name, fsynced, renamed. ``Runner.save_checkpoint`` writes on the main process only, so only there
    is a file to rename; the other ranks call it as mmengine would."""
    if not is_main_process():
        save(out_dir, filename, *args, **kwargs)
        return
    save_atomically(os.path.join(out_dir, filename),
                    lambda tmp: save(out_dir, os.path.basename(tmp), *args, **kwargs), fsync=True)


def _open_for_checkpoint_hook(path: str, mode: str = "r", *args, **kwargs):
    """The ``open`` mmengine's checkpoint hook sees: writes (``last_checkpoint``) go through ``atomic_open``,
    anything else is the built-in ``open``."""
    if "w" not in mode:
        return open(path, mode, *args, **kwargs)
    return atomic_open(path, mode, *args, **kwargs)
