"""Test-wide setup: this folder is on sys.path (pytest's rootdir conftest), so tests in subfolders import the shared
helper modules beside this file (``hf_upernet_reference``, ``mode_stubs``, ``tiny_train``, ``swin2mmseg_reference``,
``swin_unet_reference``).

``swin_checkpoints`` holds the session fixtures of one random Swin-T in every checkpoint layout, used by the
converters' tests (tests/convert) and the loaders' (tests/backbones, tests/inference)."""
from __future__ import annotations

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
