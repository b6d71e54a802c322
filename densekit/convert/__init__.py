"""Load Swin checkpoints from any layout people have: read, unwrap, detect, convert, adapt, load.

``load_pretrained(model, path)`` is what ``SwinTransformer(pretrained=path)`` calls::

    read_checkpoint(path)      .safetensors, or torch.load(weights_only=True) for .pth/.pt/.bin/.ckpt
    unwrap(obj)                {'model'|'state_dict'|'module': sd}, 'module.' / 'backbone.' prefixes
    detect_layout(sd)          'official' | 'timm' | 'mmseg' | 'densekit'
    convert_swin(sd, layout)   key tables of official_swin.py, timm.py, mmseg.py (pure functions)
    adapt_state_dict(...)      bias tables -> the model's window, absolute_pos_embed -> its grid,
                               patch_embed.proj.weight -> its in_chans; anything else must fit
    model.load_state_dict(strict=False), then a LoadReport of what was renamed, resized, dropped, missing

``convert_file`` does the same into a fresh model and saves a densekit checkpoint (``tools/convert.py``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..fileio import save_atomically
from ..layers.rel_pos_bias import resize_abs_pos_embed, resize_bias_table, table_window
from .common import DROP_RULES, CheckpointError, LoadReport, StateDict, Tensors, apply_rules
from .mmseg import densekit_to_mmseg, mmseg_to_densekit
from .official_swin import densekit_to_official, official_to_densekit
from .timm import timm_to_densekit

LAYOUTS = ("official", "timm", "mmseg", "densekit")
BIAS_RESIZE = ("bicubic", "geometric")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_WRAPPERS = ("state_dict", "model", "module")  # mmengine, official Swin, DeepSpeed-style


# ----------------------------------------------------------------------------------------- reading
def _numpy_globals() -> list:
    """numpy types that mmengine meta and message hubs pickle (scalars, arrays, dtypes): data only."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray
    found: list = [np.ndarray, np.dtype]
    for name in ("scalar", "_reconstruct"):
        # Files written under numpy 1 name numpy.core, under numpy 2 numpy._core: accept both.
        fn = getattr(multiarray, name)
        found += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [t for t in (getattr(dtypes, n) for n in dtypes.__all__) if isinstance(t, type)]
    return found


def _history_buffer_globals() -> list:
    """mmengine's ``HistoryBuffer`` (in ``message_hub`` of every Runner checkpoint), if installed.

    It pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. Allow-listing the real
    ``getattr`` would let a file reach any attribute, so ``builtins.getattr`` resolves to a stand-in
    that answers exactly those four look-ups and refuses everything else.
    """
    try:
        from mmengine.logging import HistoryBuffer
    except ImportError:
        return []

    def history_buffer_getattr(obj: object, name: str) -> object:
        if obj is HistoryBuffer and name in ("min", "max", "current", "mean"):
            return getattr(obj, name)
        raise pickle.UnpicklingError(f"refused getattr({obj!r}, {name!r}) while loading weights")

    return [HistoryBuffer, (history_buffer_getattr, "builtins.getattr")]


def checkpoint_safe_globals() -> contextlib.AbstractContextManager:
    """Context in which ``torch.load(weights_only=True)`` also accepts what mmengine checkpoints hold
    besides tensors: numpy scalars, arrays and dtypes, and ``HistoryBuffer`` (with a getattr that
    reaches only its statistics methods). Scoped, so nothing stays allow-listed afterwards; used by
    ``read_checkpoint`` and around mmengine's own ``torch.load`` (resume, ``load_from``)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: only tensors and containers load
        return contextlib.nullcontext()
    return safe_globals(_numpy_globals() + _history_buffer_globals())


UNSAFE_LOAD_HINT = ("only if you trust the file, pass --unsafe-load (unsafe_load=True) to unpickle it "
                    "as it is, or re-save just its state dict")


def refused_types(error: Exception) -> list[str]:
    """The globals torch's weights-only unpickler refused, parsed from its message (``GLOBAL x.y ...``)."""
    return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(error))))


def is_refusal(error: Exception) -> bool:
    """Whether an ``UnpicklingError`` is torch's weights-only refusal (not a corrupt file)."""
    text = str(error).lower()
    return "weights only" in text or "weights_only" in text


def refused_message(source: str, error: Exception, path: str | os.PathLike | None = None) -> str:
    """What was refused, naming the file and the offending types, and the explicit opt-in."""
    unsafe: list[str] = []
    if path is not None:
        with contextlib.suppress(Exception):  # a static scan of the pickle: runs nothing
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    types = unsafe or refused_types(error)
    found = f"it pickles {', '.join(types)}" if types else "it pickles objects that are not tensors"
    # torch's message is a page long; its one informative line names the refused global.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in lines if "WeightsUnpickler error" in line), lines[-1] if lines else "")
    return (
        f"refused to load checkpoint {source}: {found}, which torch.load(weights_only=True) does not allow; "
        "unpickling arbitrary objects can run any code the file chooses, so densekit only loads tensors, "
        f"containers and the metadata types mmengine writes. {UNSAFE_LOAD_HINT}. torch said: {cause}"
    )


def _read_torch(path: Path, unsafe_load: bool = False) -> Mapping:
    try:
        if unsafe_load:
            _log(f"unpickling {path} with weights_only=False (--unsafe-load): it may run code", logging.WARNING)
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with checkpoint_safe_globals():
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if is_refusal(error):
            raise CheckpointError(refused_message(str(path), error, path)) from error
        raise CheckpointError(f"could not read checkpoint {path}: {error}") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"could not read checkpoint {path}: {error}") from error
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def read_checkpoint(path: str | os.PathLike, unsafe_load: bool = False) -> Mapping:
    """Read a checkpoint file into whatever dict it holds (nothing is unwrapped yet).

    ``.safetensors`` is read with safetensors; ``.pth``, ``.pt``, ``.bin`` and ``.ckpt`` with
    ``torch.load(map_location='cpu', weights_only=True)`` plus a small allow-list (numpy scalars,
    arrays and dtypes; mmengine's ``HistoryBuffer``), so mmengine Runner checkpoints load as they are.
    Anything else is refused, naming the offending types; ``unsafe_load=True`` (``--unsafe-load``) is
    the explicit opt-in to full unpickling, for files you trust.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, refused by ``weights_only``, or an unknown extension; the
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own SafetensorError, not importable by name
            raise CheckpointError(f"could not read safetensors checkpoint {path}: {error}") from error
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path, unsafe_load)
    raise CheckpointError(
        f"checkpoint {path}: unknown extension {suffix!r}; use .safetensors or {', '.join(TORCH_SUFFIXES)}"
    )


def _strip_prefixes(state_dict: Tensors) -> StateDict:
    """Drop DDP's ``module.`` and a segmentor's ``backbone.``; other parts of a segmentor checkpoint
    (``decode_head.*``...) keep their names so the converters can drop and report them."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module."):]: value for key, value in state_dict.items()}
    if not any(key.startswith("backbone.") for key in state_dict):
        return dict(state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        new = key[len("backbone."):] if key.startswith("backbone.") else key
        if new in out:
            raise CheckpointError(f"checkpoint has both {new!r} and 'backbone.{new}'")
        out[new] = value
    return out


def checkpoint_tensors(obj: Mapping) -> StateDict:
    """The tensors inside ``obj['state_dict' | 'model' | 'module']`` wrappers (nested too), keys untouched;
    non-tensor entries skipped.

    Raises:
        CheckpointError: no dict of tensors found.
    """
    for _ in range(len(_WRAPPERS) + 1):
        inner = next((obj[key] for key in _WRAPPERS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no state dict in checkpoint; top-level keys: {list(obj)[:10]}")
    return tensors


def unwrap(obj: Mapping) -> StateDict:
    """The state dict inside a checkpoint (``checkpoint_tensors``) with ``module.``/``backbone.`` prefixes removed."""
    return _strip_prefixes(checkpoint_tensors(obj))


# ------------------------------------------------------------------------------ detect and convert
_DENSEKIT_KEY = re.compile(r"^stages\.\d+\.blocks\.\d+\.attn\.qkv\.")
_TIMM_DOWNSAMPLE = re.compile(r"^layers\.[1-9]\d*\.downsample\.")


def detect_layout(state_dict: Tensors) -> str:
    """Which layout an unwrapped Swin state dict is in: ``'official'``, ``'timm'``, ``'mmseg'`` or ``'densekit'``.

    Official and timm differ only in where patch merging lives: official has
    ``layers.0.downsample``, timm has ``layers.{last}.downsample`` (the head is not used alone:
    headless checkpoints exist).

    Raises:
        CheckpointError: not a Swin V1 state dict in a known layout.
    """
    keys = list(state_dict)
    if any("cpb_mlp" in key or key.endswith("logit_scale") for key in keys):
        raise CheckpointError("a Swin V2 checkpoint (cpb_mlp / logit_scale keys): densekit's Swin is V1")
    if any(".attn.w_msa." in key or key.startswith("patch_embed.projection.") or ".ffn.layers." in key for key in keys):
        return "mmseg"
    if any(_DENSEKIT_KEY.match(key) for key in keys):
        return "densekit"
    if any(key.startswith("layers.") for key in keys):
        if "layers.0.downsample.reduction.weight" in state_dict:
            return "official"
        if any(_TIMM_DOWNSAMPLE.match(key) for key in keys) or "head.fc.weight" in state_dict:
            return "timm"
        if "head.weight" in state_dict:
            return "official"
        raise CheckpointError("Swin state dict without downsample or head keys: cannot tell official from timm")
    raise CheckpointError(f"not a Swin state dict in a known layout ({', '.join(LAYOUTS)}); first keys: {keys[:5]}")


def _densekit_to_densekit(state_dict: Tensors, progress: bool = False) -> tuple[StateDict, LoadReport]:
    # Already densekit: only buffers and non-backbone parts of a segmentor checkpoint go.
    out, report = apply_rules(state_dict, DROP_RULES, progress=progress)
    report.layout = "densekit"
    return out, report


_CONVERTERS: dict[str, Callable[..., tuple[StateDict, LoadReport]]] = {
    "official": official_to_densekit,
    "timm": timm_to_densekit,
    "mmseg": mmseg_to_densekit,
    "densekit": _densekit_to_densekit,
}


def convert_swin(state_dict: Tensors, layout: str, progress: bool = False) -> tuple[StateDict, LoadReport]:
    """Convert an unwrapped Swin state dict from ``layout`` to densekit keys (a pure function).

    Returns:
        ``(densekit_state_dict, report)`` with ``renamed``, ``permuted`` and ``dropped`` filled in.
    """
    if layout not in _CONVERTERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return _CONVERTERS[layout](state_dict, progress=progress)


# --------------------------------------------------------------------------- adapt to the model
def _adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    try:
        from timm.models import adapt_input_conv
    except ImportError:  # pragma: no cover - older timm
        from timm.models._manipulate import adapt_input_conv
    return adapt_input_conv(in_chans, weight)


def _adapt_tensor(
    key: str, value: torch.Tensor, shape: tuple[int, ...], model: nn.Module, bias_resize: str
) -> torch.Tensor | None:
    """``value`` resized to the model's ``shape`` where densekit knows how (``_resize_tensor``), else None: a
    result of any other shape is None too, so callers need one test."""
    new = _resize_tensor(key, value, shape, model, bias_resize)
    return new if new is not None and tuple(new.shape) == tuple(shape) else None


def _resize_tensor(
    key: str, value: torch.Tensor, shape: tuple[int, ...], model: nn.Module, bias_resize: str
) -> torch.Tensor | None:
    """``value`` resized towards the model's ``shape`` where densekit knows how, else None.

    Bias tables ``(L1, nH)`` -> ``(L2, nH)``; ``absolute_pos_embed`` ``(1, N1, C)`` -> ``(1, N2, C)``;
    ``patch_embed.proj.weight`` ``(C, 3, p, p)`` -> ``(C, in_chans, p, p)`` (timm's ``adapt_input_conv``).
    """
    if key.endswith("relative_position_bias_table"):
        if value.dim() != 2 or value.shape[1] != shape[1]:
            return None  # a different number of heads is a different model
        try:
            table_window(value)
        except ValueError as error:
            raise CheckpointError(f"{key}: {error} (shape {tuple(value.shape)})") from error
        return resize_bias_table(value, (math.isqrt(shape[0]) + 1) // 2, bias_resize)
    if key == "absolute_pos_embed":
        grid = tuple(getattr(model, "pretrain_grid", (math.isqrt(shape[1]),) * 2))
        if value.dim() != 3 or value.shape[2] != shape[2] or grid[0] * grid[1] != shape[1]:
            return None
        try:
            return resize_abs_pos_embed(value, grid)
        except ValueError as error:
            raise CheckpointError(f"{key}: {error}") from error
    if key == "patch_embed.proj.weight" and value.shape[0] == shape[0] and value.shape[2:] == shape[2:]:
        return _adapt_input_conv(shape[1], value)
    return None


def _misfit_message(model: nn.Module, unexpected: list[str], mismatched: list[str], limit: int = 8) -> str:
    lines = [f"checkpoint does not fit the {type(model).__name__}:"]
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys (no such parameter in the model; weights of "
                     f"another variant, e.g. swin_s into swin_t?): " + ", ".join(unexpected[:limit]))
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches densekit cannot resize: " + "; ".join(mismatched[:limit]))
    return "\n".join(lines)


def adapt_state_dict(
    state_dict: Tensors,
    model: nn.Module,
    bias_resize: str = "bicubic",
    report: LoadReport | None = None,
    progress: bool = False,
) -> StateDict:
    """Fit a densekit-keyed state dict to ``model``: resize what can be resized, check the rest.

    Out norms the model lacks (``out_norm=False`` or fewer ``out_indices``) are dropped; ``report``
    gains ``resized``, those drops and ``missing``.

    Raises:
        CheckpointError: keys the model has no parameter for, or shapes that cannot be resized
            (named with both shapes).
    """
    report = report if report is not None else LoadReport()
    target = model.state_dict()
    origin = {new: old for old, new in report.renamed}
    out: StateDict = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in tqdm(state_dict.items(), desc="adapting", leave=False, disable=None if progress else True):
        named = key if origin.get(key, key) == key else f"{key} (checkpoint: {origin[key]})"
        if key not in target:
            if key.startswith("out_norms."):
                report.dropped.append(origin.get(key, key))
            else:
                unexpected.append(f"{named} {tuple(value.shape)}")
            continue
        shape = tuple(target[key].shape)
        if tuple(value.shape) != shape:
            new = _adapt_tensor(key, value, shape, model, bias_resize)
            if new is None:
                mismatched.append(f"{named}: checkpoint {tuple(value.shape)}, model {shape}")
                continue
            report.resized.append((key, tuple(value.shape), shape))
            value = new
        out[key] = value
    if unexpected or mismatched:
        raise CheckpointError(_misfit_message(model, unexpected, mismatched))
    report.missing = [key for key in target if key not in out]
    return out


# ----------------------------------------------------------------------------------------- loading
def _log(message: str, level: int = logging.INFO) -> None:
    # mmengine's current logger: the same stream as a Runner's training log.
    from mmengine.logging import print_log

    print_log(message, logger="current", level=level)


def load_state_dict_from(
    model: nn.Module,
    checkpoint: Mapping,
    source: str = "",
    bias_resize: str = "bicubic",
    verbose: bool = True,
    progress: bool = True,
) -> LoadReport:
    """``load_pretrained`` on a checkpoint already in memory (what ``read_checkpoint`` returns).

    Args:
        checkpoint: a state dict or any wrapper ``unwrap`` understands.
        source: where it came from, for messages and the report.
        bias_resize, verbose, progress: as in ``load_pretrained``.
    """
    if bias_resize not in BIAS_RESIZE:
        raise ValueError(f"bias_resize must be one of {BIAS_RESIZE}, got {bias_resize!r}")
    try:
        state_dict = unwrap(checkpoint)
        converted, report = convert_swin(state_dict, detect_layout(state_dict), progress=progress)
        weights = adapt_state_dict(converted, model, bias_resize, report, progress)
    except CheckpointError as error:
        raise CheckpointError(f"{source or 'checkpoint'}: {error}") from error
    result = model.load_state_dict(weights, strict=False)
    report.source, report.loaded, report.missing = source, len(weights), list(result.missing_keys)
    if verbose:
        _log(report.summary(), logging.WARNING if report.missing_weights() else logging.INFO)
    return report


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    bias_resize: str = "bicubic",
    verbose: bool = True,
    progress: bool = True,
) -> LoadReport:
    """Load a Swin checkpoint in any supported layout into a densekit ``SwinTransformer``.

    Args:
        model: the target model; its window, grid and ``in_chans`` decide the resizing.
        path: ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt``.
        bias_resize: ``'bicubic'`` (official Swin, default) or ``'geometric'`` (timm) for bias tables.
        verbose: log ``report.summary()`` through mmengine's logger.
        progress: tqdm bars over the keys (shown only on a terminal).

    Returns:
        The ``LoadReport``; missing keys (e.g. ``out_norms.0-2`` from ImageNet weights) do not fail.

    Raises:
        FileNotFoundError, CheckpointError: unreadable file, unknown layout, unexpected keys or
            shapes that cannot be resized; messages name the file and keys.
    """
    if bias_resize not in BIAS_RESIZE:  # before reading a large file
        raise ValueError(f"bias_resize must be one of {BIAS_RESIZE}, got {bias_resize!r}")
    return load_state_dict_from(model, read_checkpoint(path), str(path), bias_resize, verbose, progress)


def convert_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    model_name: str,
    window_size: int | None = None,
    in_chans: int | None = None,
    bias_resize: str = "bicubic",
    unsafe_load: bool = False,
) -> LoadReport:
    """Convert ``src`` (any layout) into a densekit checkpoint for ``create_backbone(model_name, ...)``.

    ``dst`` ending in ``.safetensors`` gets the state dict with string metadata; anything else an
    mmengine-style ``{'meta': {...}, 'state_dict': ...}`` written with ``torch.save``.

    Returns:
        The ``LoadReport`` of loading ``src`` into the new model (``unsafe_load``: see ``read_checkpoint``).
    """
    import densekit
    from densekit.backbones import create_backbone

    checkpoint = read_checkpoint(src, unsafe_load)  # a bad file fails before a model is built
    options = {k: v for k, v in (("window_size", window_size), ("in_chans", in_chans)) if v is not None}
    model = create_backbone(model_name, **options)
    report = load_state_dict_from(model, checkpoint, str(src), bias_resize, verbose=False)
    meta = {
        "densekit_version": densekit.__version__, "source": str(src), "layout": report.layout, "model": model_name,
        "window_size": getattr(model, "window_size", window_size), "in_chans": getattr(model, "in_chans", in_chans),
    }
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    dst = Path(dst)
    if dst.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        metadata = {key: str(value) for key, value in meta.items()}
        save_atomically(dst, lambda tmp: save_file(state_dict, tmp, metadata=metadata))
    else:
        save_atomically(dst, lambda tmp: torch.save({"meta": meta, "state_dict": state_dict}, tmp))
    return report


__all__ = [
    "BIAS_RESIZE", "LAYOUTS", "CheckpointError", "LoadReport", "adapt_state_dict", "checkpoint_safe_globals",
    "convert_file", "convert_swin", "densekit_to_mmseg", "densekit_to_official", "detect_layout", "load_pretrained",
    "load_state_dict_from", "read_checkpoint", "refused_message", "unwrap",
]
