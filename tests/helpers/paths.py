"""Where the tests find the repository and the small real samples of ``../shared/data`` (absent in a user's clone:
the tests that need them skip), and where module-scoped fixtures write their files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"


def scratch_dir(request: pytest.FixtureRequest, name: str) -> Path:
    """A new folder for a module- or session-scoped fixture, removed when that fixture's scope ends: the
    checkpoints the tests write are 100-400 MB each, and pytest would otherwise keep every one until the session
    ends (CI ran out of disk that way)."""
    path = request.getfixturevalue("tmp_path_factory").mktemp(name)
    request.addfinalizer(lambda: shutil.rmtree(path, ignore_errors=True))
    return path
