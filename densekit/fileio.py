"""One way densekit writes files: through a hidden temporary file beside the target and a rename.

Readers (a resumed run, a viewer, a second process) see the old file or the whole new one, never half of
one, and a failed write leaves nothing behind. Checkpoints (``densekit.convert``), pictures, volumes,
CSV tables, proposals and the benchmark docs all go through ``save_atomically`` (a writer given a path) or
``atomic_open`` (a file object); mmengine's own checkpoint and ``last_checkpoint`` writes go through both,
by way of ``densekit.engine.hooks.SafeCheckpointHook``.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temporary_name(dst: str | os.PathLike) -> Path:
    """A fresh hidden name beside ``dst`` that ends with ``dst``'s own name: ``dir/.<8 hex>.<name>``.

    Hidden, so listings and globs of the folder (``iter_*.pth``) skip a write in progress; ending with the
    name, so writers that pick the format from the extension (OpenCV, matplotlib, nibabel's ``.nii.gz``) write
    the right one.
    """
    dst = Path(dst)
    return dst.with_name(f".{uuid.uuid4().hex[:8]}.{dst.name}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _publish(tmp: Path, dst: Path) -> None:
    """Give ``tmp`` the mode a plain ``open`` would (some writers, e.g. safetensors, create 0600 files) and
    rename it over ``dst``."""
    mask = os.umask(0)  # read the umask (the only portable way is to set it and put it back)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, dst)


@contextmanager
def _staged(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; rename it over ``dst`` when the block ends cleanly, remove it
    (if it was written at all) when the block raises."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(dst)
    try:
        yield tmp
        _publish(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomically(dst: str | os.PathLike, write: Callable[[str], object], fsync: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``dst`` (see ``temporary_name``) and rename it over
    ``dst``; returns ``dst``.

    ``fsync=True`` flushes the bytes to the disk before the rename, so after a power loss the name never points
    at a file whose content was still in the page cache (checkpoints). On any error the temporary file is removed
    and the error propagates.
    """
    dst = Path(dst)
    with _staged(dst) as tmp:
        write(str(tmp))
        if fsync:
            _fsync(tmp)
    return dst


@contextmanager
def atomic_open(dst: str | os.PathLike, mode: str = "w", buffering: int = -1, encoding: str | None = None,
                errors: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """``open(dst, mode)`` for writing, atomically: the file object writes a temporary file beside ``dst``,
    which is flushed, fsynced and renamed over ``dst`` when the ``with`` block ends, or removed if it raises.

    Arguments as the built-in ``open``; ``mode`` must write a whole file (``'w'``, ``'wb'``, ``'wt'``,
    ``'w+'``...): appending or updating in place cannot go through a fresh file.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole new file: mode must start with 'w', got {mode!r}")
    with _staged(Path(dst)) as tmp, open(tmp, mode, buffering, encoding, errors, newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
