"""What mmsegmentation's loss types share: class weights (a list or a file), the reductions a training loss may
use, and the ``eps`` its ``weight_reduce_loss`` adds to an explicit averaging factor."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from mmengine.fileio import load

# mmseg's weight_reduce_loss divides by ``avg_factor + eps`` so that a crop whose pixels are all ignored gives 0.
AVG_EPS = torch.finfo(torch.float32).eps


def class_weight_tensor(owner: str, class_weight: Sequence[float] | str | None) -> torch.Tensor | None:
    """``class_weight`` as a float32 ``(K,)`` tensor, or None.

    As mmseg's ``get_class_weight``, a string is a file: ``.npy`` (read without pickle) or ``.json`` / ``.yaml``
    holding a list. Pickle files are refused: loading one runs arbitrary code.
    """
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        path = Path(class_weight)
        if path.suffix == ".npy":
            class_weight = np.load(path, allow_pickle=False).tolist()
        elif path.suffix in (".json", ".yaml", ".yml"):
            class_weight = load(str(path))
        else:
            raise ValueError(f"{owner}: class_weight={str(path)!r} must be a list or a .npy, .json or .yaml file "
                             "(pickle files are not read)")
    weight = torch.as_tensor(class_weight, dtype=torch.float32)
    if weight.dim() != 1:
        raise ValueError(f"{owner}: class_weight must be one weight per class, got shape {tuple(weight.shape)}")
    return weight


def check_reduction(owner: str, reduction: str) -> None:
    """A training loss must end as one number: ``'mean'`` or ``'sum'``; mmseg's ``'none'`` is refused by name."""
    if reduction == "none":
        raise ValueError(f"{owner}: reduction='none' leaves a loss per pixel or image, and a head's training loss "
                         "must be one number; use 'mean' or 'sum'")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{owner}: reduction must be 'mean' or 'sum', got {reduction!r}")


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """mmseg's ``reduce_loss`` without an averaging factor: mean or sum over every element."""
    return loss.mean() if reduction == "mean" else loss.sum()
