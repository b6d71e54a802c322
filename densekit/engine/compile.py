"""``torch.compile`` as an option with a clean fallback to eager (DESIGN.md §7).

``torch.compile`` is lazy: wrapping a model almost never fails; a missing C++ compiler, an unsupported
platform or an operation dynamo cannot trace shows up at the first call, as an exception from deep inside
dynamo or inductor. ``CompiledOrEager`` holds both paths: it calls the compiled one, and when that raises
but the eager one (the reference path) succeeds on the same arguments, it warns once, naming the reason,
and runs eagerly from then on, returning the eager result of the call that failed. When eager raises too,
the error is the caller's (a bad input), not the compiler's: eager's exception propagates and the compiled
path is kept.

Read top to bottom: the warning, ``CompiledOrEager``, ``compile_with_fallback`` (any callable),
``compile_method`` (a method, replaced on the instance), ``maybe_compile`` (a module's ``forward``),
``compile_status``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class CompileFallbackWarning(UserWarning):
    """``torch.compile`` was unavailable or failed; the named callable runs eagerly from now on."""


def _reason(error: BaseException) -> str:
    """``'ErrorType: first line of the message'``, at most 300 characters (inductor errors run to pages)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


class CompiledOrEager:
    """A callable running ``torch.compile(fn)`` while it works and ``fn`` itself once it has failed.

    ``state`` is ``'not run'`` until the first call, ``'compiled'`` once a compiled call has returned,
    ``'eager'`` after a fallback (``reason`` then says why). A call that falls back runs ``fn`` a second
    time on the same arguments, so a step with side effects (an optimizer step) may partly run twice on
    that one call.
    """

    def __init__(self, fn: Callable[..., Any], name: str, backend: str = "inductor", mode: str | None = None,
                 dynamic: bool | None = None, fullgraph: bool = False) -> None:
        self.eager = fn
        self.name = name
        self.state = "not run"
        self.reason: str | None = None
        self.compiled: Callable[..., Any] | None = None
        try:
            self.compiled = torch.compile(fn, backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph)
        except Exception as error:  # e.g. torch.compile unsupported on this Python
            self._fall_back(f"torch.compile raised {_reason(error)}")

    def _fall_back(self, reason: str) -> None:
        self.compiled, self.state, self.reason = None, "eager", reason
        warnings.warn(f"torch.compile of {self.name} failed ({reason}); running {self.name} eagerly "
                      "from now on", CompileFallbackWarning, stacklevel=3)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as error:
            out = self.eager(*args, **kwargs)  # raises the caller's own error when eager fails too
            self._fall_back(f"the compiled call raised {_reason(error)}")
            return out
        self.state = "compiled"
        return out


def compile_with_fallback(fn: Callable[..., Any], name: str, backend: str = "inductor", mode: str | None = None,
                          dynamic: bool | None = None, fullgraph: bool = False) -> CompiledOrEager:
    """``fn`` compiled with ``torch.compile(fn, backend=..., mode=..., dynamic=..., fullgraph=...)``, falling
    back to ``fn`` with one ``CompileFallbackWarning`` naming ``name`` and the reason (see ``CompiledOrEager``).
    Compilation happens at the first call (and again for new input shapes or dtypes)."""
    return CompiledOrEager(fn, name, backend, mode, dynamic, fullgraph)


def compile_method(obj: Any, method: str, backend: str = "inductor", mode: str | None = None,
                   dynamic: bool | None = None, fullgraph: bool = False) -> CompiledOrEager:
    """Replace ``obj.<method>`` on the instance by its compiled-or-eager version and return that.

    Like mmengine's ``compile`` option, the instance keeps its class, attributes and state dict (no
    ``_orig_mod.`` prefix); ``del obj.<method>`` restores the eager method. An instance whose method is
    already compiled this way is left as it is.
    """
    bound = getattr(obj, method, None)
    if not callable(bound):
        raise AttributeError(f"{type(obj).__name__} has no method {method!r} to compile")
    if isinstance(bound, CompiledOrEager):
        return bound
    wrapped = compile_with_fallback(bound, f"{type(obj).__name__}.{method}", backend, mode, dynamic, fullgraph)
    setattr(obj, method, wrapped)
    return wrapped


def maybe_compile(module: nn.Module, enabled: bool = True, backend: str = "inductor", mode: str | None = None,
                  dynamic: bool | None = None, fullgraph: bool = False) -> nn.Module:
    """``module`` with its ``forward`` compiled in place (``compile_method(module, 'forward', ...)``), so that
    ``module(x)`` runs compiled code while it works and eagerly after a failure, with one warning; returns
    ``module`` itself (its class, attributes and state dict unchanged). ``enabled=False`` returns it untouched.

    Compile after copying: a compiled module does not deep-copy or pickle.
    """
    if enabled:
        compile_method(module, "forward", backend, mode, dynamic, fullgraph)
    return module


def compile_status(obj: Callable[..., Any] | nn.Module) -> str:
    """``'compiled'``, ``'not run'``, ``'eager (<reason>)'`` for a ``CompiledOrEager`` or a module compiled by
    ``maybe_compile``; ``'not compiled'`` for anything else."""
    wrapped = obj.__dict__.get("forward") if isinstance(obj, nn.Module) else obj
    if not isinstance(wrapped, CompiledOrEager):
        return "not compiled"
    return f"eager ({wrapped.reason})" if wrapped.state == "eager" else wrapped.state
