"""What the command-line tools share: expected errors as one message instead of a traceback, common arguments.

``tools/*.py`` end with ``run_tool(main)``: a missing file or folder (dataset, config, checkpoint), a checkpoint
that cannot be read or does not fit the model (``CheckpointError``) or a config
error (a file that does not parse, a ``type`` no registry knows, a ``ConfigError``) is printed to stderr as
``error: <message>`` and the process exits with status 1. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..convert.report import CheckpointError
from ..engine.config_check import ConfigError


class UserError(Exception):
    """A mistake in what the user asked for (an unreadable input, an option that does not apply), raised with a
    message that says what to do; printed as one ``error:`` paragraph by ``run_tool``."""


# Errors a user fixes by changing a path, a file or a config, each raised with a message that says what to do
# (CheckpointError: a file that is not a checkpoint, is cut off, or does not fit the config's model).
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, NotADirectoryError, FileExistsError,
                                                CheckpointError, UserError)


def add_unsafe_load_argument(parser: argparse.ArgumentParser) -> None:
    """``--unsafe-load``: the explicit opt-in to full unpickling that safe loading's refusals point to."""
    parser.add_argument("--unsafe-load", action="store_true",
                        help="unpickle checkpoints fully (weights_only=False): may run code; trusted files only")


def add_no_accel_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-accel``: run the plain model, without densekit's CPU fast paths (``densekit.accel``)."""
    parser.add_argument("--no-accel", action="store_true",
                        help="do not install densekit's CPU fast paths (oneDNN fused linears, tiled window "
                             "attention, Winograd convolutions; on by default on the CPU)")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` (mmengine's) and the ``--local-rank`` torch.distributed.launch passes."""
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)


def _is_config_error(error: BaseException) -> bool:
    """mmengine's words for a config that does not parse (SyntaxError naming the file) or names a type no
    registry has (KeyError '... is not in the densekit::model registry ...')."""
    if isinstance(error, SyntaxError):
        return "config file" in str(error)
    if isinstance(error, KeyError):
        return " registry" in str(error) and "is not in the" in str(error)
    return True


def run_tool(main: Callable[[], object]) -> None:
    """Call a tool's ``main()``; on a user error print one paragraph to stderr and exit with status 1."""
    try:
        main()
    except (*USER_ERRORS, ConfigError, SyntaxError, KeyError) as error:
        if not _is_config_error(error):
            raise
        message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
