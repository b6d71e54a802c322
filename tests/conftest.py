"""Test-wide setup: this folder is on sys.path (pytest's rootdir conftest), so tests in subfolders import the shared
helper modules beside this file (``hf_upernet_reference``, ``mode_stubs``, ``tiny_train``, ``swin2mmseg_reference``,
``swin_unet_reference``) and the one copy of each small helper in ``helpers/`` (paths, demo configs, tools).

``swin_checkpoints`` holds the session fixtures of one random Swin-T in every checkpoint layout, used by the
converters' tests (tests/convert) and the loaders' (tests/backbones, tests/inference)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

pytest_plugins = ["swin_checkpoints"]


@pytest.fixture(scope="session")
def pyproject() -> dict:
    """The checkout's pyproject.toml, parsed: ``tomllib`` on Python >= 3.11, its backport ``tomli`` (in the test
    extra) on 3.10, so the checks run on every supported Python instead of skipping on 3.10."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Fail any attempt to resolve a host or open a connection, so a hub or URL fallback cannot pass unnoticed
    (an AssertionError, which no ``except OSError`` fallback swallows); returns the attempts, for tests that also
    check that none was made."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
