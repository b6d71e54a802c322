"""A toy training run of a few milliseconds a step for the engine tests (hooks, safe loading): a linear regressor
whose loss turns NaN at a chosen iteration, on eight constant vectors."""
from __future__ import annotations

import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.model import BaseModel
from torch import nn

from densekit.registry import DATASETS, MODELS


@MODELS.register_module(name="_NaNAtIterToy", force=True)
class NaNAtIterToy(BaseModel):
    """A linear regressor whose ``loss_ce`` is NaN at training call ``nan_at`` (1-based)."""

    def __init__(self, nan_at: int) -> None:
        super().__init__()
        self.nan_at, self.calls = nan_at, 0
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode: str = "loss", **meta):
        x = torch.stack(inputs)
        loss = self.linear(x).pow(2).mean()
        if mode != "loss":
            return [loss]
        self.calls += 1
        return dict(loss_ce=loss * float("nan") if self.calls == self.nan_at else loss, loss_aux=0.1 * loss)


@DATASETS.register_module(name="_ToyVectors", force=True)
class ToyVectors(BaseDataset):
    def __init__(self) -> None:
        super().__init__(serialize_data=False, lazy_init=False)

    def load_data_list(self) -> list[dict]:
        return [dict(inputs=torch.full((2,), float(i))) for i in range(8)]


def nan_loss_config(nan_at: int) -> Config:
    """8 iterations of batch 2, a checkpoint and a log line every 2; the loss is NaN at iteration ``nan_at``."""
    return Config(dict(
        default_scope="densekit",
        model=dict(type="_NaNAtIterToy", nan_at=nan_at),
        train_dataloader=dict(dataset=dict(type="_ToyVectors"), batch_size=2, num_workers=0,
                              sampler=dict(type="InfiniteSampler", shuffle=False)),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=8),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2),
                           logger=dict(type="LoggerHook", interval=2)),
        log_level="WARNING",
    ))
