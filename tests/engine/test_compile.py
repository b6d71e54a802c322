"""densekit.engine.compile: torch.compile with a clean fallback to eager (compiled agrees with eager; failures warn
once)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from densekit.engine.compile import (
    CompileFallbackWarning,
    compile_method,
    compile_status,
    compile_with_fallback,
    maybe_compile,
)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()


def _raising_compile(message: str = "C++ compile error: no working C++ compiler found"):
    """A stand-in for torch.compile whose compiled callable fails at its first call, as inductor does."""
    calls = []

    def fake_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(args)
            raise RuntimeError(message + "\nmore lines of compiler output")

        return compiled

    return fake_compile, calls


def test_dynamo_compiled_model_agrees_with_eager():
    """Real dynamo tracing (the aot_eager backend: no C++ build, so the test stays fast)."""
    model, x = _tiny_model(), torch.randn(2, 3, 16, 16)
    expected = model(x)
    compiled = maybe_compile(copy.deepcopy(model), backend="aot_eager")
    assert compile_status(compiled) == "not run"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        out = compiled(x)
    assert compile_status(compiled) == "compiled"
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_inductor_compiled_model_agrees_with_eager():
    """The default backend, inductor, with its C++ build (half a minute on a small CPU, cold cache)."""
    model, x = _tiny_model(), torch.randn(2, 3, 16, 16)
    expected = model(x)
    compiled = maybe_compile(copy.deepcopy(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        out = compiled(x)
    assert compile_status(compiled) == "compiled"
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_failure_at_first_call_falls_back_once_with_eager_outputs(monkeypatch):
    fake, calls = _raising_compile()
    monkeypatch.setattr(torch, "compile", fake)
    model, x = _tiny_model(), torch.randn(1, 3, 8, 8)
    expected = model(x)
    compiled = maybe_compile(model)
    with pytest.warns(CompileFallbackWarning) as record:
        outs = [compiled(x) for _ in range(3)]
    assert len(record) == 1
    message = str(record[0].message)
    assert "Sequential.forward" in message and "RuntimeError: C++ compile error" in message
    assert "more lines" not in message  # the first line of the reason only
    assert len(calls) == 1  # never tried again after the fallback
    for out in outs:
        assert torch.equal(out, expected)
    assert compile_status(compiled).startswith("eager (the compiled call raised RuntimeError: C++ compile error")


def test_failure_at_a_later_call_falls_back(monkeypatch):
    """A recompile (a new input shape) can fail after the first call worked: that call returns eager outputs."""
    shapes = []

    def fake_compile(fn, **kwargs):
        def compiled(x):
            shapes.append(tuple(x.shape))
            if len(shapes) > 1:
                raise RuntimeError("recompile failed")
            return fn(x)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    step = compile_with_fallback(lambda x: x * 2, name="double")
    assert torch.equal(step(torch.ones(2)), torch.full((2,), 2.0)) and step.state == "compiled"
    with pytest.warns(CompileFallbackWarning, match="double"):
        assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))
    assert step.state == "eager" and step.reason == "the compiled call raised RuntimeError: recompile failed"


def test_torch_compile_raising_at_wrap_time_falls_back(monkeypatch):
    def unsupported(fn, **kwargs):
        raise RuntimeError("torch.compile is not supported on Python 3.99+")

    monkeypatch.setattr(torch, "compile", unsupported)
    with pytest.warns(CompileFallbackWarning, match="not supported on Python") as record:
        step = compile_with_fallback(lambda x: x + 1, name="add one")
        assert [step(1), step(2)] == [2, 3]
    assert len(record) == 1 and step.state == "eager"


def test_an_error_eager_raises_too_is_the_callers_and_keeps_the_compiled_path(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # "compiled" = the same function
    model = maybe_compile(_tiny_model())
    model(torch.randn(1, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        with pytest.raises(RuntimeError, match="channels"):
            model(torch.randn(1, 5, 8, 8))  # wrong channel count: the model's error, not the compiler's
    assert compile_status(model) == "compiled"


def test_maybe_compile_keeps_the_module_and_can_be_undone(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    model = _tiny_model()
    keys = list(model.state_dict())
    assert maybe_compile(model, enabled=False) is model and compile_status(model) == "not compiled"
    assert maybe_compile(model) is model and isinstance(model, nn.Sequential)
    assert list(model.state_dict()) == keys  # no _orig_mod. prefix
    wrapped = model.forward
    maybe_compile(model)
    assert model.forward is wrapped  # compiling twice keeps the one wrapper
    del model.forward
    assert compile_status(model) == "not compiled"


def test_compile_method_names_a_missing_method():
    with pytest.raises(AttributeError, match="Sequential has no method 'encode_decode'"):
        compile_method(_tiny_model(), "encode_decode")
