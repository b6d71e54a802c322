"""Where the tests find the repository and the small real samples of ``../shared/data`` (absent in a user's clone:
the tests that need them skip)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
