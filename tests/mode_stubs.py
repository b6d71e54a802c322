"""Stand-ins for tests of the benchmark modes: a ``torch.compile`` that fails where a test says, without inductor
or a C++ compiler (``monkeypatch.setattr(torch, "compile", failing_compile({2}))``), and a recorder of the models
a suite prepares (``record_prepare_model``)."""
from __future__ import annotations


def failing_compile(fail_calls: set[int]):
    """A torch.compile stand-in: the ``fail_calls``-th compiled callables (counting from 1) raise at their
    first call, as inductor does without a C++ compiler; the others run the function itself."""
    count = [0]

    def fake_compile(fn, **kwargs):
        count[0] += 1
        if count[0] not in fail_calls:
            return fn

        def compiled(*args, **kw):
            raise RuntimeError("C++ compile error: stand-in for a missing compiler")

        return compiled

    return fake_compile


def record_prepare_model(monkeypatch, module) -> list[tuple[str, str]]:
    """Wrap ``module.prepare_model`` (where a suite looks it up) for the test: each call appends (the model's
    top-level package, e.g. ``'densekit'`` or ``'timm'``, mode) to the list returned."""
    prepared = []
    original = module.prepare_model

    def spy(model, mode):
        prepared.append((type(model).__module__.split(".")[0], mode))
        return original(model, mode)

    monkeypatch.setattr(module, "prepare_model", spy)
    return prepared
