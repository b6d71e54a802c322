"""Atomic writes: a reader sees the old file or the whole new one, temporary names are hidden, failures leave
nothing behind, and fsync runs before the rename when asked."""
from __future__ import annotations

import os
import stat

import pytest

from densekit import fileio
from densekit.fileio import atomic_open, save_atomically, temporary_name


def test_temporary_name_is_hidden_beside_the_target_and_keeps_its_name(tmp_path):
    tmp = temporary_name(tmp_path / "iter_4.pth")
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".iter_4.pth")
    assert temporary_name(tmp_path / "iter_4.pth") != tmp


def test_save_atomically_replaces_the_whole_file_and_cleans_up_on_error(tmp_path):
    dst = tmp_path / "sub" / "table.csv"
    assert save_atomically(dst, lambda tmp: open(tmp, "w").write("old")) == dst
    assert dst.read_text() == "old" and stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~_umask()

    def dying(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt("killed while writing")

    with pytest.raises(KeyboardInterrupt):
        save_atomically(dst, dying)
    assert dst.read_text() == "old" and os.listdir(dst.parent) == ["table.csv"]


def test_save_atomically_fsyncs_before_the_rename_only_when_asked(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    dst = tmp_path / "iter_2.pth"
    save_atomically(dst, lambda tmp: open(tmp, "wb").write(b"weights"))
    assert synced == []
    save_atomically(dst, lambda tmp: open(tmp, "wb").write(b"weights"), fsync=True)
    assert len(synced) == 1 and os.path.basename(synced[0]).startswith(".")  # the temporary file, not dst


def test_atomic_open_shows_nothing_until_closed_then_renames(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(fileio.os, "fsync", synced.append)
    dst = tmp_path / "last_checkpoint"
    dst.write_text("iter_2.pth")
    with atomic_open(dst, "w") as f:
        f.write("iter_4.pth")
        f.flush()
        assert dst.read_text() == "iter_2.pth"  # readers still see the old pointer
        assert [p.name.startswith(".") for p in tmp_path.iterdir() if p != dst] == [True]
    assert dst.read_text() == "iter_4.pth" and len(synced) == 1 and os.listdir(tmp_path) == ["last_checkpoint"]


def test_atomic_open_keeps_the_old_file_on_error_and_refuses_appending(tmp_path):
    dst = tmp_path / "last_checkpoint"
    dst.write_text("iter_2.pth")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(dst, "w", encoding="utf-8") as f:
        f.write("iter_")
        raise RuntimeError("boom")
    assert dst.read_text() == "iter_2.pth" and os.listdir(tmp_path) == ["last_checkpoint"]
    with pytest.raises(ValueError, match="mode must start with 'w', got 'a'"), atomic_open(dst, "a"):
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
