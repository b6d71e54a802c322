"""The ``densekit`` command: top-level help without importing torch, every subcommand's help, the entry point, and
the same behaviour as the ``tools/*.py`` scripts (one implementation, two doors)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.demo import tiny_demo_config

from densekit import cli as commands
from densekit.cli import COMMANDS, Command

ROOT = Path(__file__).resolve().parents[2]
# The scripts import densekit from sys.path: make it this checkout, not whichever densekit is installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _run(*args: str | Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_top_level_help_lists_every_command_without_torch():
    # What keeps it fast is not importing torch (checked below); its time is measured in benchmarks, not here.
    proc = _run("-m", "densekit", "--help")
    assert proc.returncode == 0, proc.stderr
    for name, command in COMMANDS.items():
        assert f"  {name} " in proc.stdout and command.summary in proc.stdout
    assert "densekit train upernet_swin_t_demo" in proc.stdout
    probe = _run("-c", "import sys; from densekit.cli import main; main(['--help']); "
                 "print('TORCH', 'torch' in sys.modules)")
    assert probe.stdout.strip().endswith("TORCH False"), probe.stdout + probe.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_help_has_usage_and_examples(name):
    # A command listed in COMMANDS whose module is gone is a broken install: fail, do not skip.
    assert importlib.util.find_spec(f"densekit.cli.{COMMANDS[name].module}") is not None, \
        f"densekit {name} is listed but densekit/cli/{COMMANDS[name].module}.py is missing"
    proc = _run("-m", "densekit", name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: densekit {name}"), proc.stdout[:200]
    assert "xample" in proc.stdout, f"densekit {name} --help shows no examples"


def test_entry_point_is_declared(pyproject):
    project = pyproject["project"]
    assert project["scripts"]["densekit"] == "densekit.cli:main"
    module, attr = project["scripts"]["densekit"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert {"onnx", "onnxruntime"} <= {dep.split(">")[0].split("=")[0]
                                                     for dep in project["optional-dependencies"]["export"]}


def test_convert_errors_the_same_through_both_doors(tmp_path):
    missing = tmp_path / "missing.pth"
    args = [str(missing), str(tmp_path / "out.pth"), "--model", "swin_t"]
    via_command = _run("-m", "densekit", "convert", *args)
    via_script = _run(ROOT / "tools" / "convert.py", *args)
    assert via_command.returncode == via_script.returncode == 1
    assert via_command.stderr == via_script.stderr and str(missing) in via_command.stderr
    assert via_command.stdout == via_script.stdout
    assert not (tmp_path / "out.pth").exists()


def test_train_user_error_the_same_through_both_doors(tmp_path):
    via_command = _run("-m", "densekit", "train", "configs/nope.py", "--work-dir", tmp_path)
    via_script = _run(ROOT / "tools" / "train.py", "configs/nope.py", "--work-dir", tmp_path)
    assert via_command.returncode == via_script.returncode == 1
    assert via_command.stderr == via_script.stderr
    assert via_command.stderr.startswith("error: config file configs/nope.py does not exist; densekit ships: ")


def test_unknown_and_missing_commands_are_clear_errors(monkeypatch, capsys):
    assert commands.main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    monkeypatch.setitem(COMMANDS, "ghost", Command("no_such_module", "not installed", "densekit ghost", True))
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["ghost", "--help"])
    assert exit_info.value.code == 1
    assert "'densekit ghost' is not available" in capsys.readouterr().err
    assert commands.main([]) == 2 and "usage: densekit" in capsys.readouterr().out


def test_return_codes_pass_through(monkeypatch):
    """A ``main`` that returns an int sets the exit status (convert, export); anything else is 0 (benchmark
    returns its measurement); ``run_tool`` commands turn user errors into status 1."""
    fake = type(sys)("densekit.cli.fake")
    fake.main = lambda argv: int(argv[0]) if argv[0].isdigit() else object()
    monkeypatch.setitem(sys.modules, "densekit.cli.fake", fake)
    monkeypatch.setitem(COMMANDS, "fake", Command("fake", "test double", "densekit fake", False))
    monkeypatch.setitem(COMMANDS, "fake-tool", Command("fake", "test double", "densekit fake-tool", True))
    assert commands.main(["fake", "3"]) == 3 and commands.main(["fake", "x"]) == 0
    assert commands.main(["fake-tool", "4"]) == 4
    fake.main = lambda argv: (_ for _ in ()).throw(FileNotFoundError("data/x does not exist"))
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["fake-tool"])
    assert exit_info.value.code == 1


def test_train_prints_progress_and_a_final_summary(tmp_path):
    """``densekit train`` on a 2-iteration demo run: mmengine's LoggerHook line (iteration, lr, ETA, time,
    losses) per iteration, then the summary table with the work dir, checkpoint and validation metrics."""
    cfg = tiny_demo_config(tmp_path / "data", log_every_iter=True)
    config, work_dir = tmp_path / "tiny_demo.py", tmp_path / "work"
    cfg.dump(str(config))
    proc = _run("-m", "densekit", "train", config, "--work-dir", work_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    progress = [line for line in log.splitlines() if "Iter(train) [2/2]" in line]
    assert progress, log[-3000:]
    assert all(word in progress[0] for word in ("lr:", "eta:", "time:", "loss:", "decode.loss_ce:")), progress[0]
    summary = proc.stdout[proc.stdout.index("training summary"):]
    assert f"work dir         {work_dir}" in summary
    assert f"last checkpoint  {work_dir / 'iter_2.pth'}" in summary
    assert "(2 iterations" in summary and "last train loss" in summary
    miou = next(line for line in summary.splitlines() if line.strip().startswith("mIoU"))
    last, high, low = map(float, miou.split()[1:])
    assert 0.0 <= low <= last <= high <= 1.0
