"""The ``tools/*.py`` shims as modules, to call their ``main`` in-process (cheaper than a subprocess)."""
from __future__ import annotations

import importlib.util
from types import ModuleType

from helpers.paths import ROOT


def load_tool(name: str = "convert") -> ModuleType:
    """``tools/<name>.py`` imported under a private module name."""
    spec = importlib.util.spec_from_file_location(f"densekit_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
