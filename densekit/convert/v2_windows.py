"""Which windows a Swin V2 checkpoint was trained at, per stage: read from its file name or its metadata.

Swin V2's position bias is an MLP over relative coordinates normalised by the window the weights were trained at,
so a file runs at another window unchanged if the model normalises by the file's windows (``pretrained_window_size``
of ``SwinTransformerV2``). A stage whose map is no larger than the window used one window of the map's side
(official code), so the pretrained window of stage ``i`` is ``min(window, image / patch / 2^i)``: window 12 at
192 px gives ``(12, 12, 12, 6)`` (the last map is 6x6), window 8 at 256 px gives ``(8, 8, 8, 8)``.

Names (released files): ``swinv2_tiny_patch4_window8_256``; ``swinv2_base_patch4_window12to16_192to256`` (fine-tuned
at window 16 with the coordinates of window 12 at 192 px, as timm's ``pretrained_window_sizes=(12, 12, 12, 6)``:
the FIRST numbers); ``simmim_pretrain__swinv2_base__img192_window12__800ep``; short forms ``..._w16_512``.
Metadata: densekit's ``meta['pretrained_window_size']`` (what ``densekit convert`` wrote), or the official
training ``config`` (``MODEL.SWINV2.PRETRAINED_WINDOW_SIZES``, else ``MODEL.SWINV2.WINDOW_SIZE`` at
``DATA.IMG_SIZE``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

Windows = tuple[int, ...]
_NAME_WINDOW = re.compile(r"(?:window|(?<![a-z0-9])w)(\d+)(?:to\d+)?(?:_(\d+)(?:to\d+)?)?")
_NAME_IMAGE = re.compile(r"(?<![a-z0-9])img(?:_?size)?_?(\d+)")


def trained_windows(window: int, image: int | None, num_stages: int, patch: int = 4) -> Windows:
    """Per-stage windows of a model trained at ``window`` on ``image`` px: ``min(window, map side)``; every stage
    at ``window`` when the image size is unknown."""
    if image is None:
        return (window,) * num_stages
    return tuple(max(1, min(window, image // patch // 2**i)) for i in range(num_stages))


def windows_from_name(path: str | os.PathLike, num_stages: int, patch: int = 4) -> tuple[Windows, str] | None:
    """``(per-stage windows, how)`` from a file's name, or None when the name says no window."""
    name = os.path.basename(str(path)).lower()
    match = _NAME_WINDOW.search(name)
    if match is None:
        return None
    window = int(match.group(1))
    image = match.group(2) or next(iter(_NAME_IMAGE.findall(name)), None)
    windows = trained_windows(window, int(image) if image else None, num_stages, patch)
    at = f"at {image} px" if image else "(no image size in the name: every stage taken as one window or more)"
    return windows, f"the file name {os.path.basename(str(path))} (window {window} {at})"


def _ints(value: object) -> Windows:
    """``8``, ``[8, 8, 8, 4]``, ``'(8, 8, 8, 4)'`` (safetensors metadata is text) -> a tuple of ints."""
    if isinstance(value, str):
        return tuple(int(v) for v in re.findall(r"\d+", value))
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _per_stage(windows: Windows, num_stages: int, where: str) -> Windows:
    if len(windows) == 1:
        return windows * num_stages
    if len(windows) != num_stages:
        raise ValueError(f"{where} gives {len(windows)} windows {windows} for a model of {num_stages} stages")
    return windows


def windows_from_meta(checkpoint: Mapping, num_stages: int, patch: int = 4) -> tuple[Windows, str] | None:
    """``(per-stage windows, how)`` from a checkpoint's ``meta`` (densekit) or ``config`` (official training
    files), or None when neither names them.

    Raises:
        ValueError: a per-stage list of another length than the model's stages.
    """
    meta = checkpoint.get("meta")
    if isinstance(meta, Mapping) and meta.get("pretrained_window_size") not in (None, "", 0, "0"):
        windows = _per_stage(_ints(meta["pretrained_window_size"]), num_stages, "meta['pretrained_window_size']")
        if any(windows):
            return windows, "the checkpoint's meta['pretrained_window_size']"
    config = checkpoint.get("config")
    swinv2 = config.get("MODEL", {}).get("SWINV2", {}) if isinstance(config, Mapping) else {}
    if not isinstance(swinv2, Mapping):
        return None
    given = swinv2.get("PRETRAINED_WINDOW_SIZES")
    if given and any(given):
        windows = _per_stage(_ints(given), num_stages, "config MODEL.SWINV2.PRETRAINED_WINDOW_SIZES")
        return windows, "the checkpoint's config MODEL.SWINV2.PRETRAINED_WINDOW_SIZES"
    if swinv2.get("WINDOW_SIZE"):
        window, image = int(swinv2["WINDOW_SIZE"]), config.get("DATA", {}).get("IMG_SIZE")
        return (trained_windows(window, int(image) if image else None, num_stages, patch),
                f"the checkpoint's config MODEL.SWINV2.WINDOW_SIZE {window} at DATA.IMG_SIZE {image}")
    return None
