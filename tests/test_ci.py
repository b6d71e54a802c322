"""CI's command runs the three lanes: .ci/run is ``make ci``; ``make ci`` runs ``make test``'s lint first, then the
default suite, the slow lane and the README lane side by side; the suites run on pytest-xdist workers
(docs/testing.md)."""
from __future__ import annotations

import re
from pathlib import Path

from helpers.tools import makefile_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_make_ci_and_make_ci_runs_the_three_lanes():
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make ci" in commands and not any(c.startswith("make ") and c != "make ci" for c in commands)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^ci: lint$", makefile, re.M) and re.search(r"^test: lint$", makefile, re.M)
    lanes = makefile_recipe("ci").split()
    assert lanes[0] == "@OMP_NUM_THREADS=1"  # one torch thread a process: the lanes share two cores
    assert {"--jobs", "PYTEST_NICE=5", "lane-test-suite", "lane-test-slow", "lane-test-readme"} <= set(lanes)
    assert "ruff" in makefile_recipe("lint") and "lint-imports" in makefile_recipe("lint")


def test_the_suites_run_on_xdist_workers_and_the_slow_lane_selects_slow():
    assert "-n $(PYTEST_WORKERS)" in re.search(r"^PYTEST :=(.*)$", (ROOT / "Makefile").read_text(), re.M)[1]
    assert "$(PYTEST)" in makefile_recipe("test") and "$(PYTEST)" in makefile_recipe("test-suite")
    assert "$(PYTEST) -m slow" in makefile_recipe("test-slow")
    assert "check_readme.py" in makefile_recipe("test-readme")
