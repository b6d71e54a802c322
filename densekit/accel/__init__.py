"""CPU fast paths, installed on a built model by one call: ``optimize(model)``.

The networks (``layers``, ``backbones``, ``necks``, ``heads``, ``models``) hold the reference path and the
device-agnostic SDPA path only. Everything CPU-specific (oneDNN fused linears, tiled window attention, Winograd
3x3 convolutions, the fused upsampled cross-entropy) lives here, as subclasses of the network modules that take
their fast path when it applies (CPU tensors, the right mode and dtype, no graph being traced) and call the
network's own ``forward`` otherwise. ``optimize`` swaps each module it knows for its subclass in place
(``module.__class__``), the way ``ipex.optimize`` and torch.ao's module swaps work: parameters, buffers, hooks
and state-dict keys stay as they are, and ``restore`` puts the network classes back.

Read top to bottom: the swap table, ``register``, ``optimize``, ``restore``, then the modules that register
their subclasses.
"""
from __future__ import annotations

from torch import nn

# network class -> its CPU subclass (filled by ``register`` as the modules below are imported)
SWAPS: dict[type[nn.Module], type[nn.Module]] = {}


def register(subclass: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: ``subclass`` (of exactly one network class) replaces its base in ``optimize``.

    The subclass may add no constructor state: ``optimize`` changes the class of a built module, so anything
    it needs (caches) is created lazily on first use.
    """
    (base,) = subclass.__bases__
    if base in SWAPS:
        raise KeyError(f"{base.__name__} already has an accelerated subclass ({SWAPS[base].__name__})")
    SWAPS[base] = subclass
    return subclass


def optimize(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Install densekit's CPU fast paths on ``model`` in place and return it (``enabled=False``: untouched).

    Every submodule whose class has a registered subclass is switched to it; the fast paths then run where
    they apply and the network's own path everywhere else, so an optimized model gives the same results as the
    plain one (up to floating-point rounding, which tests/accel holds to tolerances) on any device.
    """
    if enabled:
        for module in model.modules():
            swap = SWAPS.get(type(module))
            if swap is not None:
                module.__class__ = swap
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo ``optimize``: every accelerated module gets its network class back. Returns ``model``."""
    back = {swap: base for base, swap in SWAPS.items()}
    for module in model.modules():
        base = back.get(type(module))
        if base is not None:
            module.__class__ = base
    return model


def is_optimized(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` runs an accelerated class."""
    accelerated = set(SWAPS.values())
    return any(type(module) in accelerated for module in model.modules())


def clear_caches() -> None:
    """Drop what the fast paths cache from weights (oneDNN-packed linear weights, folded attention masks).

    The caches follow in-place updates by themselves; clearing frees their memory while weights keep changing
    (training after a validation, ``AccelHook``) and makes them see writes through ``.data``, which bypass
    the version counters they key on.
    """
    fused_linear.clear_packed_weights()
    swin.clear_folded_masks()
    swin_v2.clear_folded_masks()


# The modules that register their subclasses (after ``register`` exists: they import it from here).
from . import fused_linear, losses, swin, swin_v2, winograd  # noqa: E402

__all__ = ["SWAPS", "clear_caches", "fused_linear", "is_optimized", "losses", "optimize", "register", "restore",
           "swin", "swin_v2", "winograd"]
