"""One way densekit writes files: through a temporary file beside the target and a rename.

Readers (a resumed run, a viewer, a second process) see the old file or the whole new one, never half of
one, and a failed write leaves nothing behind. Checkpoints (``densekit.convert``), pictures, volumes,
CSV tables, proposals and the benchmark docs all go through ``save_atomically``; mmengine's own
checkpoint writes are made atomic by ``densekit.engine.hooks.SafeCheckpointHook``.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def save_atomically(dst: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``dst`` and rename it over ``dst``; returns ``dst``.

    The temporary name ends with ``dst``'s own name, so writers that pick the format from the extension
    (OpenCV, matplotlib, nibabel's ``.nii.gz``) write the right one. The file gets the mode a plain ``open``
    would give it (some writers, e.g. safetensors, create 0600 files). On any error the temporary file is
    removed and the error propagates.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{uuid.uuid4().hex[:8]}.{dst.name}")
    try:
        write(str(tmp))
        mask = os.umask(0)  # read the umask (the only portable way is to set it and put it back)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
