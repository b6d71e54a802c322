"""A quiet Runner: mmengine's preamble (environment, config, hook order) goes to the log file, not the terminal,
until ``runner.train()`` starts; warnings still reach the terminal."""
from __future__ import annotations

import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

from densekit.engine.console import build_quietly, log_to_file


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, inputs, data_samples=None, mode="tensor"):
        return self.linear(inputs)


def _runner(work_dir):
    return Runner(model=_Toy(), work_dir=str(work_dir), experiment_name=f"toy_{work_dir.name}")


def test_the_preamble_goes_to_the_log_file_only(tmp_path, capsys):
    runner = build_quietly(lambda: _runner(tmp_path / "quiet"))
    runner.logger.info("still quiet")
    runner.logger.warning("a warning shows")
    out = capsys.readouterr().out
    assert "System environment" not in out and "still quiet" not in out and "a warning shows" in out
    opener = [hook for hook in runner.hooks if type(hook).__name__ == "_OpenAtTrainingStart"]
    assert len(opener) == 1
    opener[0].before_run(runner)  # runner.train() starts: the gate opens
    runner.logger.info("iteration line")
    assert "iteration line" in capsys.readouterr().out
    log = next((tmp_path / "quiet").glob("*/*.log"))
    path = log_to_file(runner, "stopped", ValueError("boom"))
    assert path == str(log)
    text = log.read_text()
    assert "System environment" in text and "still quiet" in text and "Traceback" not in capsys.readouterr().out
    assert "ValueError: boom" in text


def test_a_verbose_runner_prints_the_preamble(tmp_path, capsys):
    _runner(tmp_path / "loud")
    assert "System environment" in capsys.readouterr().out
