"""tools/check_readme.py --skip / --instead: the CI's README lane leaves out the commands CI runs as lanes of their
own."""
from __future__ import annotations

import shlex

from helpers.tools import load_tool, makefile_recipe

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


def test_instead_runs_another_command_in_place_of_the_matched_one():
    code = "make demo\nmake test\nmake test-slow\n"
    kept, dropped = CHECK.without_skipped(code, ["make test-slow"], {"make test": "make install-test"})
    assert dropped == ["make test", "make test-slow"]
    assert CHECK.block_commands(kept) == ["make demo", "make install-test", ":"]


def _readme_lane_arguments() -> tuple[list[str], dict[str, str]]:
    """The ``--skip`` patterns and ``--instead`` pairs of the Makefile's ``test-readme`` recipe."""
    words = shlex.split(makefile_recipe("test-readme"))
    skip = [words[i + 1] for i, word in enumerate(words) if word == "--skip"]
    instead = {words[i + 1]: words[i + 2] for i, word in enumerate(words) if word == "--instead"}
    return skip, instead


def test_the_readme_lane_still_runs_the_demo_and_leaves_out_the_test_lanes():
    skip, instead = _readme_lane_arguments()
    assert instead == {"make test": "make install-test"} and "make test-slow" in skip
    runs, dropped = [], []
    for language, code in CHECK.readme_blocks(CHECK.ROOT / "README.md"):
        if language == "bash":
            kept, left_out = CHECK.without_skipped(code, skip, instead)
            runs += [c for c in CHECK.block_commands(kept) if c != ":"]
            dropped += left_out
    assert "make demo" in runs and "make install-test" in runs
    assert "make test" in dropped and "make test-slow" in dropped
    assert not any(CHECK.skips(command, [*skip, "make test"]) for command in runs)


def test_a_training_block_on_a_config_that_inherits_stand_in_data_stops_early(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.py").write_text('data_root = "data/Synapse"\n')
    (tmp_path / "configs" / "listed.py").write_text('_base_ = ["./base.py"]\nmodel = dict(version=2)\n')
    (tmp_path / "configs" / "plain.py").write_text('_base_ = "base.py"\n')
    (tmp_path / "configs" / "own.py").write_text('data_root = "data/own"\n')
    for name, stops in (("listed", True), ("plain", True), ("own", False)):
        code = f".venv/bin/python tools/train.py configs/{name}.py \\\n    --cfg-options a=1\n"
        assert CHECK.trains_on_standin_data(code, tmp_path) is stops, name
    two = ".venv/bin/python -c 'print(1)'\n.venv/bin/python tools/train.py configs/listed.py\n"
    assert not CHECK.trains_on_standin_data(two, tmp_path)  # a block that goes on runs to its end
