"""The ``tools/*.py`` shims as modules, to call their ``main`` in-process (cheaper than a subprocess)."""
from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from helpers.paths import ROOT


def load_tool(name: str = "convert") -> ModuleType:
    """``tools/<name>.py`` imported under a private module name."""
    spec = importlib.util.spec_from_file_location(f"densekit_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def makefile_recipe(target: str) -> str:
    """The recipe lines of ``target`` in the checkout's Makefile, continuation lines joined."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    return re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)[1]
