"""The table ``densekit train`` prints when training ends: time, work dir, checkpoints, last and best metrics.

Everything is read back from the runner's ``message_hub``, where mmengine's hooks leave it: ``RuntimeInfoHook``
keeps every validation metric as the scalar ``val/<name>`` (a history, one value per validation), the
``CheckpointHook`` records ``last_ckpt`` and, with ``save_best``, ``best_ckpt`` / ``best_score``. Per-iteration
progress (iteration, losses, lr, ETA, time, memory) is mmengine's ``LoggerHook`` line during training.
"""
from __future__ import annotations

import math
from pathlib import Path


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _last_checkpoint(runner) -> str | None:
    """``last_ckpt`` from the message hub, else the ``last_checkpoint`` file the CheckpointHook writes."""
    last = runner.message_hub.get_info("last_ckpt")
    if last:
        return str(last)
    pointer = Path(runner.work_dir) / "last_checkpoint"
    return pointer.read_text().strip() if pointer.is_file() else None


def _val_metrics(runner) -> dict[str, tuple[float, float, float]]:
    """``{name: (last, max, min)}`` over every validation of the run (``val/<name>`` histories)."""
    metrics = {}
    for key, buffer in runner.message_hub.log_scalars.items():
        if not key.startswith("val/") or key in ("val/time", "val/data_time"):
            continue
        values = [float(v) for v in buffer.data[0]]
        if values and all(math.isfinite(v) for v in values):
            metrics[key[len("val/"):]] = (values[-1], max(values), min(values))
    return metrics


def train_summary(runner, seconds: float) -> str:
    """A plain-text table for the end of training; ``seconds`` is the wall time of ``runner.train()``."""
    hub = runner.message_hub
    progress = f"{runner.iter} iterations" + (f", {runner.epoch} epochs" if runner.epoch else "")
    rows = [("work dir", str(runner.work_dir)), ("time", f"{_duration(seconds)} ({progress})")]
    rows.append(("last checkpoint", _last_checkpoint(runner) or "none saved"))
    best = {key: value for key, value in hub.runtime_info.items() if key.startswith("best_ckpt")}
    for key, path in best.items():
        score = hub.get_info(key.replace("best_ckpt", "best_score"))
        rows.append(("best checkpoint", f"{path}" + (f" (score {score:.4f})" if score is not None else "")))
    loss = hub.log_scalars.get("train/loss")
    if loss is not None:
        rows.append(("last train loss", f"{loss.current():.4f}"))
    width = max(len(name) for name, _ in rows)
    lines = ["", "training summary", *(f"  {name:<{width}}  {value}" for name, value in rows)]
    metrics = _val_metrics(runner)
    if metrics:
        name_width = max(6, *(len(name) for name in metrics))
        runs = len(runner.message_hub.log_scalars[f"val/{next(iter(metrics))}"].data[0])
        lines += ["", f"  validation metrics: the last, and the max / min over {runs} validation(s)",
                  f"  {'metric':<{name_width}}  {'last':>8}  {'max':>8}  {'min':>8}"]
        lines += [f"  {name:<{name_width}}  {last:>8.4f}  {high:>8.4f}  {low:>8.4f}"
                  for name, (last, high, low) in metrics.items()]
    else:
        lines.append("  (no validation ran: no metrics)")
    return "\n".join(lines)
