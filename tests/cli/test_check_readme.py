"""tools/check_readme.py --skip: the CI's README lane leaves out the commands CI runs as lanes of their own."""
from __future__ import annotations

from helpers.tools import load_tool

CHECK = load_tool("check_readme")


def test_skip_matches_whole_words_only():
    patterns = ["make test", "densekit benchmark"]
    assert CHECK.skips("make test", patterns)
    assert not CHECK.skips("make test-slow", patterns)
    assert CHECK.skips(".venv/bin/densekit benchmark upernet_swin_t_ade --runs 3", patterns)
    assert not CHECK.skips("make demo", patterns)


def test_skipped_commands_become_no_ops_and_the_rest_of_the_block_stays():
    code = "make demo   # trains\nmake test\n.venv/bin/python tools/x.py \\\n    --flag\n"
    kept, dropped = CHECK.without_skipped(code, ["make test"])
    assert dropped == ["make test"]
    commands = [" ".join(command.split()) for command in CHECK.block_commands(kept)]
    assert commands == ["make demo", ":", ".venv/bin/python tools/x.py --flag"]


def test_the_readme_lane_still_runs_the_demo_and_skips_the_test_lanes():
    blocks = CHECK.readme_blocks(CHECK.ROOT / "README.md")
    patterns = ["make test", "make test-slow", "-m benchmarks", "densekit benchmark"]
    runs, skipped = [], []
    for language, code in blocks:
        if language == "bash":
            kept, dropped = CHECK.without_skipped(code, patterns)
            runs += [c for c in CHECK.block_commands(kept) if c != ":"]
            skipped += dropped
    assert "make demo" in runs and "make test" in skipped and "make test-slow" in skipped
    assert not any(CHECK.skips(command, patterns) for command in runs)
