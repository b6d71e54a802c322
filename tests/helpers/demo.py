"""The seconds-long demo run the command and training tests launch, and the reader of what mmengine logged."""
from __future__ import annotations

import json
from pathlib import Path

from mmengine.config import Config

from densekit.engine.demo import DEMO_CONFIG, load_demo_config


def tiny_demo_config(data_root: Path, *, num_train: int = 4, work_dir: Path | None = None,
                     log_every_iter: bool = False) -> Config:
    """The demo config shrunk to 2 iterations of batch 2 on ``num_train`` generated 64x64 images (validated at
    iteration 2), with no data-loader worker processes to start."""
    extra = {} if work_dir is None else dict(work_dir=str(work_dir))
    cfg = load_demo_config(DEMO_CONFIG, data_root=str(data_root), max_iters=2, val_interval=2, crop_size=64,
                           batch_size=2, dataset=dict(num_train=num_train, num_val=2, size=(64, 64)), **extra)
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.num_workers, loader.persistent_workers = 0, False
    if log_every_iter:
        cfg.default_hooks.logger.interval = 1
    return cfg


def logged_runs(work_dir: Path) -> list[list[dict]]:
    """The training rows (those with a ``loss``) of each run in ``work_dir``, oldest run first: mmengine writes
    one ``<timestamp>/vis_data/scalars.json`` per run, one JSON object a line."""
    runs = []
    for scalars in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        rows = [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
        runs.append([row for row in rows if "loss" in row])
    return runs
