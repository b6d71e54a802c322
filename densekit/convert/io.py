"""Reading checkpoints safely, and finding the state dict inside them.

    read_checkpoint(path)            .safetensors, or torch.load(weights_only=True) for .pth/.pt/.bin/.ckpt,
                                     with a small allow-list (checkpoint_safe_globals); unsafe_load to opt out
    read_model_checkpoint(path)      the same, or a HF save_pretrained folder -> (state dict, dataset_meta)
    checkpoint_tensors(obj)          the tensors inside {'state_dict'|'model'|'module': ...} wrappers
    strip_prefixes(sd, prefixes)     'module.' (DDP), 'backbone.' (a segmentor's), 'swin_unet.' (official wrapper)
    unwrap(obj)                      a backbone's view: checkpoint_tensors, then 'module.' and 'backbone.' removed
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
from mmengine.logging import HistoryBuffer, print_log

from .report import CheckpointError
from .rules import StateDict, Tensors

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_WRAPPERS = ("state_dict", "model", "module")  # mmengine, official Swin, DeepSpeed-style
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


# --------------------------------------------------------------------------------------------- reading
def _numpy_globals() -> list:
    """numpy types that mmengine meta and message hubs pickle (scalars, arrays, dtypes): data only."""
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
    """mmengine's ``HistoryBuffer`` (in ``message_hub`` of every Runner checkpoint).

    It pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. Allow-listing the real
    ``getattr`` would let a file reach any attribute, so ``builtins.getattr`` resolves to a stand-in
    that answers exactly those four look-ups and refuses everything else.
    """

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


def refused_message(source: str, error: Exception, path: str | os.PathLike | None = None,
                    hint: str = UNSAFE_LOAD_HINT) -> str:
    """What was refused, naming the file and the offending types, and ``hint``: what the caller can do (by
    default the explicit opt-in of the loaders that offer ``unsafe_load``)."""
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
        f"containers and the metadata types mmengine writes. {hint}. torch said: {cause}"
    )


def unreadable_message(path: Path, error: BaseException) -> str:
    """Why ``torch.load`` could not read ``path``, in a user's words: an empty file, a file that is neither a
    torch zip archive nor a pickle (text, an image, a download error page), or a cut-off / corrupt archive."""
    size = path.stat().st_size
    if size == 0:
        return f"could not read checkpoint {path}: the file is empty (0 bytes); copy or download it again"
    with open(path, "rb") as file:
        head = file.read(16)
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # zip archive (torch >= 1.6) or pickle protocol 2+
        return (f"could not read checkpoint {path}: it is not a PyTorch checkpoint ({size} bytes starting with "
                f"{head!r}); pass a .pth/.pt written by torch.save, or a .safetensors file")
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    first_line = first_line.split(". ")[0]  # torch adds a paragraph of guesses after the cause
    return (f"could not read checkpoint {path} ({size} bytes): {first_line}; the file may be truncated or "
            "corrupt, copy or download it again")


def _read_torch(path: Path, unsafe_load: bool = False) -> Mapping:
    try:
        if unsafe_load:
            print_log(f"unpickling {path} with weights_only=False (--unsafe-load): it may run code", logger="current",
                      level=logging.WARNING)
            obj = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with checkpoint_safe_globals():
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if is_refusal(error):
            raise CheckpointError(refused_message(str(path), error, path)) from error
        raise CheckpointError(unreadable_message(path, error)) from error
    except Exception as error:  # a non-checkpoint file makes the unpickler fail in any way (KeyError: 101, ...)
        raise CheckpointError(unreadable_message(path, error)) from error
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
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own SafetensorError, not importable by name
            raise CheckpointError(f"could not read safetensors checkpoint {path}: {error}") from error
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path, unsafe_load)
    raise CheckpointError(
        f"checkpoint {path}: unknown extension {suffix!r}; use .safetensors or {', '.join(TORCH_SUFFIXES)}"
    )


# ------------------------------------------------------------------------------------------ unwrapping
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


def strip_prefixes(state_dict: Tensors, prefixes: Sequence[str]) -> StateDict:
    """Remove each of ``prefixes``, in order, from every key that starts with it.

    ``('module.',)`` undoes DDP / ``nn.DataParallel``; ``'backbone.'`` gives a backbone its part of a
    segmentor checkpoint (other parts, e.g. ``decode_head.*``, keep their names so converters can drop and
    report them); ``'swin_unet.'`` undoes the official Swin-Unet wrapper.

    Raises:
        CheckpointError: two keys become one once a prefix is removed (e.g. ``a`` and ``backbone.a``).
    """
    out = dict(state_dict)
    for prefix in prefixes:
        stripped: StateDict = {}
        for key, value in out.items():
            new = key[len(prefix):] if key.startswith(prefix) else key
            if new in stripped:
                raise CheckpointError(f"checkpoint has both {new!r} and {prefix + new!r}: "
                                      f"they would be one key once {prefix!r} is removed")
            stripped[new] = value
        out = stripped
    return out


def unwrap(obj: Mapping) -> StateDict:
    """A backbone's state dict inside a checkpoint (``checkpoint_tensors``), ``module.``/``backbone.`` removed."""
    return strip_prefixes(checkpoint_tensors(obj), ("module.", "backbone."))


# --------------------------------------------------------------------------------- whole-model files
def dataset_meta(meta: object) -> dict:
    """Class names and palette from mmengine (``dataset_meta``) or mmseg 0.x (``CLASSES``/``PALETTE``) meta."""
    if not isinstance(meta, Mapping):
        return {}
    if isinstance(meta.get("dataset_meta"), Mapping):
        return dict(meta["dataset_meta"])
    found = {}
    if meta.get("CLASSES"):
        found["classes"] = list(meta["CLASSES"])
    if meta.get("PALETTE"):
        found["palette"] = [list(color) for color in meta["PALETTE"]]
    return found


def _hf_folder(path: Path) -> tuple[Path, dict]:
    """The weights file of a HF ``save_pretrained`` folder and class names from its ``config.json``."""
    weights = next((path / name for name in _HF_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path} is a folder without {' or '.join(_HF_FILES)} (sharded HF checkpoints are "
                              "not supported: save_pretrained(..., max_shard_size='10GB') writes one file)")
    meta = {}
    config = path / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            meta["classes"] = [id2label[k] for k in sorted(id2label, key=int)]
    return weights, meta


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (``{}`` when it has none)."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _safetensors_meta(path: Path) -> dict | None:
    """densekit's meta, kept as JSON under the ``densekit_meta`` metadata key of its ``.safetensors`` files."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        stored = (handle.metadata() or {}).get("densekit_meta")
    return dataset_meta(json.loads(stored)) if stored else None


def read_model_checkpoint(path: str | os.PathLike, unsafe_load: bool = False) -> tuple[StateDict, dict]:
    """Read a whole-model checkpoint file (or HF folder) into ``(state dict, dataset_meta)``, ``module.`` removed.

    Raises:
        FileNotFoundError, CheckpointError: as ``read_checkpoint``, naming the file.
    """
    path = Path(path)
    meta: dict = {}
    if path.is_dir():
        path, meta = _hf_folder(path)
    checkpoint = read_checkpoint(path, unsafe_load)
    if path.suffix.lower() == ".safetensors":
        stored = _safetensors_meta(path)
        meta = meta if stored is None else stored
    else:
        meta = dataset_meta(checkpoint.get("meta")) or meta
    try:
        return strip_prefixes(checkpoint_tensors(checkpoint), ("module.",)), meta
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error


def read_whole_checkpoint(checkpoint: str | os.PathLike | Mapping, source: str = "", unsafe_load: bool = False
                          ) -> tuple[StateDict, dict, str]:
    """``(state dict, dataset_meta, source)`` of a whole-model checkpoint given as a path or already in memory."""
    if isinstance(checkpoint, Mapping):
        state_dict = strip_prefixes(checkpoint_tensors(checkpoint), ("module.",))
        return state_dict, dataset_meta(checkpoint.get("meta")), source
    state_dict, meta = read_model_checkpoint(checkpoint, unsafe_load)
    return state_dict, meta, source or str(checkpoint)
