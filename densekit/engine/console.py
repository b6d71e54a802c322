"""What a training run prints on the terminal: the iterations, not mmengine's ~280-line preamble.

mmengine's Runner logs the system environment, the whole config, the hook order and the weight
initialisation of every parameter before the first iteration, on the terminal and in the log file. A quiet
run keeps all of it in ``<work_dir>/<timestamp>/<timestamp>.log`` and shows the terminal only warnings until
``runner.train()`` starts. mmengine offers no switch for this: its logger's terminal handler
writes to whatever ``sys.stdout`` was when the Runner built it, so the Runner is built with ``sys.stdout``
pointed at a sink and the handler is then given the real stream behind a ``StartGate`` filter.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import traceback
from collections.abc import Callable

from mmengine.hooks import Hook

__all__ = ["StartGate", "build_quietly", "log_to_file"]


class StartGate(logging.Filter):
    """Passes warnings and errors always, everything else once ``open`` is True."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.open or record.levelno >= logging.WARNING


class _OpenAtTrainingStart(Hook):
    """Opens the terminal gate when ``runner.train()`` starts (``before_run``): what follows is about this run
    (the checkpoint it resumes from, "Checkpoints will be saved to", which tools/check_readme.py waits for)."""

    priority = "HIGHEST"

    def __init__(self, gate: StartGate) -> None:
        self.gate = gate

    def before_run(self, runner) -> None:
        self.gate.open = True


def build_quietly(build: Callable[[], object]):
    """``build()`` a Runner with its terminal log gated until ``runner.train()`` starts (see module doc).

    The log file keeps everything. Returns the runner, with a hook that opens the gate registered.
    """
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        runner = build()
    gate = StartGate()
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sink:
            handler.setStream(sys.stdout)
            handler.addFilter(gate)
    runner.register_hook(_OpenAtTrainingStart(gate))
    return runner


def log_to_file(runner, message: str, error: BaseException | None = None) -> str | None:
    """Append ``message`` (and ``error``'s traceback) to the runner's log file only, not the terminal;
    returns the log file's path (None when the runner has no file handler, e.g. a rank without one)."""
    text = message
    if error is not None:
        text += "\n" + "".join(traceback.format_exception(type(error), error, error.__traceback__))
    record = logging.LogRecord(runner.logger.name, logging.ERROR, __file__, 0, text, None, None)
    path = None
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            path = handler.baseFilename
    return path
