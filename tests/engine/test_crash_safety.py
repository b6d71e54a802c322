"""Crash safety: checkpoints and the ``last_checkpoint`` pointer are written atomically (SafeCheckpointHook),
and a ``tools/train.py`` run killed with SIGKILL and resumed with ``--resume`` logs the same loss at every
iteration as a run that was never interrupted (``--deterministic``, CPU)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio.backends import LocalBackend
from tiny_train import logged_losses, make_tiny_data, tiny_config

from densekit.apis import load_config, train

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # this checkout's densekit, one thread


def test_every_config_uses_the_safe_checkpoint_hook():
    for path in sorted((ROOT / "configs").glob("*.py")):
        hook = Config.fromfile(str(path)).default_hooks.checkpoint
        assert hook.type == "SafeCheckpointHook", f"{path.name}: default_hooks.checkpoint.type is {hook.type!r}"


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The second save dies half-way through writing: iter_2.pth and the pointer to it stay whole."""
    config = tiny_config(tmp_path / "tiny.py", make_tiny_data(tmp_path / "data"), max_iters=4, batch_size=2,
                         checkpoint_interval=2)
    work_dir = tmp_path / "work"
    put = LocalBackend.put

    def dying_put(self, obj: bytes, filepath) -> None:
        if "iter_4" in str(filepath):
            with open(filepath, "wb") as f:
                f.write(obj[: len(obj) // 2])
            raise KeyboardInterrupt("killed while writing a checkpoint")
        put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, "put", dying_put)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(str(config)), work_dir=str(work_dir))
    assert sorted(p.name for p in work_dir.iterdir() if p.is_file()) == ["iter_2.pth", "last_checkpoint", "tiny.py"]
    assert (work_dir / "last_checkpoint").read_text() == str(work_dir / "iter_2.pth")
    ckpt = torch.load(work_dir / "iter_2.pth", map_location="cpu", weights_only=False)
    assert ckpt["meta"]["iter"] == 2 and ckpt["rng_state"]["torch"].dtype == torch.uint8


def test_a_kill_between_writing_and_renaming_the_pointer_keeps_the_old_pointer(tmp_path, monkeypatch):
    """The second save of ``last_checkpoint`` dies after its bytes are written and before the rename: a reader
    still finds the old pointer, whole, naming iter_2.pth (a plain in-place ``open`` would already have replaced
    it, or never reach a rename at all)."""
    config = tiny_config(tmp_path / "tiny.py", make_tiny_data(tmp_path / "data"), max_iters=4, batch_size=2,
                         checkpoint_interval=2)
    work_dir = tmp_path / "work"
    pointer, replace, seen = work_dir / "last_checkpoint", os.replace, {}

    def dying_replace(src, dst) -> None:
        if Path(dst) == pointer and "iter_4" in Path(src).read_text():
            seen["pointer_before_rename"] = pointer.read_text()
            raise KeyboardInterrupt("killed between writing the pointer and renaming it")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(str(config)), work_dir=str(work_dir))
    assert seen["pointer_before_rename"] == str(work_dir / "iter_2.pth")
    assert pointer.read_text() == str(work_dir / "iter_2.pth")
    assert (work_dir / "iter_4.pth").is_file()  # the checkpoint itself was complete: only the pointer was cut
    assert not [p.name for p in work_dir.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def _train(config: Path, work_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / "train.py"), str(config), "--work-dir", str(work_dir),
            "--deterministic", *args]


def _kill_after_first_checkpoint(cmd: list[str], work_dir: Path, timeout: float = 300) -> str:
    """Start ``cmd``, SIGKILL it as soon as ``last_checkpoint`` exists; return the checkpoint it names."""
    proc = subprocess.Popen(cmd, cwd=work_dir.parent, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    pointer, deadline = work_dir / "last_checkpoint", time.monotonic() + timeout
    while not pointer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{stderr[-3000:]}"
    return pointer.read_text()


def test_kill_and_resume_logs_the_same_losses_as_an_uninterrupted_run(tmp_path):
    max_iters = 12
    config = tiny_config(tmp_path / "tiny.py", make_tiny_data(tmp_path / "data"), max_iters=max_iters,
                         batch_size=2, checkpoint_interval=2)
    start = time.perf_counter()
    whole = subprocess.run(_train(config, tmp_path / "whole"), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    t_whole = time.perf_counter() - start
    reference = logged_losses(tmp_path / "whole")[0]
    assert sorted(reference) == list(range(1, max_iters + 1))

    work_dir = tmp_path / "killed"
    start = time.perf_counter()
    last = _kill_after_first_checkpoint(_train(config, work_dir), work_dir)
    resumed_from = torch.load(last, map_location="cpu", weights_only=False)["meta"]["iter"]
    assert 2 <= resumed_from < max_iters
    time.sleep(1.1)  # mmengine names each run's log folder after the second it starts
    resumed = subprocess.run(_train(config, work_dir, "--resume"), cwd=tmp_path, env=ENV, capture_output=True,
                             text=True, timeout=300)
    t_kill_resume = time.perf_counter() - start
    print(f"\nuninterrupted {t_whole:.1f} s; killed after iter {resumed_from} + resumed {t_kill_resume:.1f} s")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed epoch: 0, iter: {resumed_from}" in resumed.stdout + resumed.stderr
    killed_run, resumed_run = logged_losses(work_dir)
    assert sorted(resumed_run) == list(range(resumed_from + 1, max_iters + 1))
    for it, loss in {**killed_run, **resumed_run}.items():
        assert loss == pytest.approx(reference[it], abs=1e-6), f"iteration {it}: {loss} vs {reference[it]}"
