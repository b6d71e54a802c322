"""The ``densekit`` command: one subcommand per tool, each the same code as its ``tools/*.py`` script.

    densekit --help                   # the table below
    densekit train CONFIG [...]       # = python tools/train.py CONFIG [...]; CONFIG: a file or a shipped name
    densekit train --help             # the subcommand's arguments and examples

The subcommand's module (``densekit/cli/<name>.py``, with ``main(argv)``) is imported only when it runs, so
``densekit --help`` does not load torch. A module run through ``run_tool`` (as its tool script does) prints user
errors as one ``error: ...`` line and exits 1; a ``main`` that returns an int sets the exit status.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # densekit.cli.<module>
    summary: str
    example: str
    run_tool: bool  # wrapped in densekit.cli.common.run_tool, as its tools/*.py script is


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train a model from a config (mmengine Runner)",
                     "densekit train upernet_swin_t_demo --work-dir work_dirs/demo", True),
    "test": Command("test", "evaluate a checkpoint on a config's test set (mIoU, DSC/HD95, proposal AR)",
                    "densekit test configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth --tta", True),
    "infer": Command("infer", "segment images, volumes or folders of either; draw RPN proposals",
                     "densekit infer configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth photos/ "
                     "--out-dir preds", True),
    "convert": Command("convert", "convert official/timm/mmseg/mmdet/HF/torchvision checkpoints to densekit",
                       "densekit convert swin_tiny_patch4_window7_224.pth swin_t.pth --model swin_t --verify", False),
    "benchmark": Command("benchmark", "measure a config's model: latency, images/s, peak memory",
                         "densekit benchmark upernet_swin_t_ade --shape 512 512 --mode bf16", True),
    "export": Command("export", "export a segmentor to ONNX and check it against PyTorch with onnxruntime",
                      "densekit export configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth --shape 256 256 "
                      "--dynamic", True),
    "demo": Command("demo", "quickstart: train UPerNet + Swin-T on generated data on the CPU",
                    "densekit demo --iters 100 --work-dir /tmp/demo", True),
    "plot": Command("plot", "plot training curves (and per-class IoU) of a run", "densekit plot work_dirs/demo",
                    True),
    "visualize-attention": Command("visualize_attention", "draw Swin window-attention maps for an image",
                                   "densekit visualize-attention configs/upernet_swin_t_demo.py "
                                   "work_dirs/demo/iter_200.pth photo.png --stage 2 --block 1 --out attn.png", True),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items())
    examples = "\n".join(f"  {cmd.example}" for cmd in COMMANDS.values() if not cmd.example.endswith("--help"))
    return (f"usage: densekit <command> [<args>]   (densekit <command> --help for its arguments)\n\n"
            f"commands:\n{rows}\n\nexamples:\n{examples}\n\n"
            "Each command is also a script with the same arguments: python tools/<command>.py\n"
            "(tools/visualize_attention.py for visualize-attention).\n")


def load(name: str):
    """The module of subcommand ``name``; a module that is not in this install is a clear error, not a
    traceback (any other import error is a bug and keeps its traceback)."""
    module = f"densekit.cli.{COMMANDS[name].module}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        print(f"error: 'densekit {name}' is not available in this install: module {module} is missing",
              file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``densekit <command> [args]``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from densekit import __version__

        print(f"densekit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"error: unknown command '{name}'{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    command_main = load(name).main
    result = None
    if COMMANDS[name].run_tool:
        from densekit.cli.common import run_tool

        def call() -> None:
            nonlocal result
            result = command_main(rest)

        run_tool(call)
    else:
        result = command_main(rest)
    return result if isinstance(result, int) else 0
