"""Run every command the README shows, in its order, in a fresh clone, as a newcomer would.

    python tools/check_readme.py                  # all commands; exit 1 if one fails
    python tools/check_readme.py --list           # only print the commands it would run
    python tools/check_readme.py --keep /tmp/rc   # keep the clone for a look afterwards
    python tools/check_readme.py --skip 'make test'   # leave out a command (CI runs that one as a lane of its own)
    python tools/check_readme.py --instead 'make test' 'make install-test'   # run another command in its place

Every ```bash block of the README runs as one ``bash -e`` script and every ```python block with the clone's
``.venv/bin/python``, one block after the other, in a fresh ``git clone`` of this repository's HEAD, with
``../shared`` linked beside the clone when this checkout has one. Later blocks use what earlier ones wrote
(the venv, the demo's checkpoint, converted files), exactly as for a reader going top to bottom. Blocks
fenced as ```text (a Slurm cluster's commands) are shown, not run.

Full datasets are downloads a fresh machine does not have, so before the first command the clone gets
*stand-in* datasets in the layouts the README documents (ADE20K, COCO, Synapse: a few generated images or
volumes each, see ``write_standin_datasets``). A command passes when it exits with status 0. The recipes for
those datasets train for days: a command still running after ``--budget`` seconds passes if its output
shows that it trains, and is then stopped: a block that is one training command on stand-in data is stopped
``--grace`` seconds after mmengine starts its training loop (its "Checkpoints will be saved to" line, printed
after the model, data and optimizer are built) or at its first training log line, and passes if it is still
running or exited 0 by then.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(r"(Iter|Epoch)\(train\)")
STARTED = re.compile(r"Checkpoints will be saved to")
STANDIN_ROOTS = ("data/ade/", "data/coco/", "data/Synapse")


def strip_comment(line: str) -> str:
    """``line`` without its bash comment: a ``#`` that starts a word outside quotes, and what follows."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_blocks(readme: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of ``readme``'s ```bash and ```python blocks, in order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", readme.read_text(), re.S | re.M)


def skips(command: str, patterns: list[str]) -> bool:
    """Whether ``command`` contains one of ``patterns`` as whole words (``make test`` is not ``make test-slow``;
    ``densekit benchmark`` is also ``.venv/bin/densekit benchmark``)."""
    return any(re.search(rf"(^|[\s/]){re.escape(p)}(\s|$)", command) for p in patterns)


def replacement(command: str, instead: dict[str, str]) -> str | None:
    """What runs in place of ``command``: ``instead[pattern]`` for the first pattern it contains, else None."""
    return next((new for old, new in instead.items() if skips(command, [old])), None)


def without_skipped(code: str, patterns: list[str],
                    instead: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """A bash block less its commands that ``skips`` names, and the commands left out. A left-out command becomes
    ``instead[pattern]`` for the first pattern of ``instead`` it matches (``make test`` -> ``make install-test``:
    the suite runs as a lane of its own, but later blocks use what it installed), else ``:``."""
    instead = instead or {}
    kept, dropped = [], []
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        command = strip_comment(line).strip()
        if command and skips(command, [*patterns, *instead]):
            kept.append(replacement(command, instead) or ":")
            dropped.append(command)
        else:
            kept.append(line)
    return "\n".join(kept) + "\n", dropped


def block_commands(code: str) -> list[str]:
    """The commands of a bash block, one a line (continuations joined, comments dropped), for listing."""
    lines = (strip_comment(line).strip() for line in re.sub(r"\\\n\s*", " ", code).splitlines())
    return [line for line in lines if line]


# ------------------------------------------------------------------------------------------- stand-in data
def _write_ade(root: Path, count: int = 4) -> None:
    """ADEChallengeData2016 layout: images/{training,validation}/*.jpg, annotations/*.png (0 = ignore, 1..150)."""
    from densekit.datasets.seg.demo import make_demo_scene

    for split_id, split in enumerate(("training", "validation")):
        for i in range(count):
            image, mask = make_demo_scene(seed=7, split=split_id, index=i, size=(256, 320))
            name = f"ADE_{'train' if split_id == 0 else 'val'}_{i:08d}"
            for folder, suffix, array in (("images", ".jpg", image), ("annotations", ".png", mask)):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / folder / split / f"{name}{suffix}"), array)


def _write_coco(root: Path, count: int = 4) -> None:
    """COCO 2017 layout from the generated demo detection data: train2017/, val2017/, annotations/."""
    from densekit.datasets.det.demo import make_demo_det_dataset

    demo = root / "demo"
    make_demo_det_dataset(str(demo), num_train=count, num_val=count)
    for split in ("train", "val"):
        shutil.copytree(demo / "images" / split, root / f"{split}2017")
        (root / "annotations").mkdir(exist_ok=True)
        annotations = demo / "annotations" / f"instances_{split}.json"
        shutil.copy(annotations, root / "annotations" / f"instances_{split}2017.json")
    shutil.rmtree(demo)


def _write_synapse(root: Path) -> None:
    """Synapse (TransUNet) layout: train_npz/*.npz slices, test_vol_h5/*.npy.h5 volumes, lists/lists_Synapse."""
    import h5py

    rng = np.random.default_rng(0)
    lists = root / "lists" / "lists_Synapse"
    for folder in ("train_npz", "test_vol_h5"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    lists.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:128, :128]
    labels = np.stack([((yy - 40 - 10 * k) ** 2 + (xx - 64) ** 2 < 400) * (1 + k) for k in range(4)]).astype(np.uint8)
    images = np.clip(0.3 + 0.4 * (labels > 0) + rng.normal(0, 0.05, labels.shape), 0, 1).astype(np.float32)
    names = [f"case0005_slice{k:03d}" for k in range(len(labels))]
    for name, image, label in zip(names, images, labels):
        np.savez(root / "train_npz" / f"{name}.npz", image=image, label=label)
    (lists / "train.txt").write_text("\n".join(names) + "\n")
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f["image"], f["label"] = images, labels.astype(np.float32)
    (lists / "test_vol.txt").write_text("case0001\n")


def write_standin_datasets(clone: Path) -> None:
    """Small generated datasets where the configs expect ADE20K, COCO and Synapse (marked as stand-ins)."""
    data = clone / "data"
    _write_ade(data / "ade" / "ADEChallengeData2016")
    _write_coco(data / "coco")
    _write_synapse(data / "Synapse")
    (data / "STAND-IN-DATA.json").write_text(json.dumps({"written_by": "tools/check_readme.py"}))


# ----------------------------------------------------------------------------------------------- running
def trains_on_standin_data(code: str, cwd: Path) -> bool:
    """Whether a block is one training command (``train.py``, ``dist_train.sh``) on a config whose data root is
    a stand-in: a block that goes on to use what it trained must run to its end."""
    if len(block_commands(code)) != 1:
        return False
    for match in re.finditer(r"(?:train\.py|dist_train\.sh|densekit train)\s+(configs/\S+\.py)", code):
        if (cwd / match[1]).is_file() and any(root in config_text(cwd / match[1]) for root in STANDIN_ROOTS):
            return True
    return False


def config_text(config: Path) -> str:
    """The text of ``config`` and of the configs it inherits (``_base_ = "x.py"`` or ``["./x.py", ...]``, paths
    relative to its folder), recursively."""
    text = config.read_text()
    base = re.search(r"^_base_\s*=\s*(\[[^\]]*\]|\S+)", text, re.M)
    for name in re.findall(r"[\"']([^\"']+\.py)[\"']", base[1] if base else ""):
        if (config.parent / name).is_file():
            text += config_text(config.parent / name)
    return text


def run_block(language: str, code: str, cwd: Path, budget: float, grace: float, log: Path) -> tuple[str, float]:
    """``('ok' | 'trains' | 'FAILED (...)', seconds)`` of one README block run in ``cwd``."""
    start = time.perf_counter()
    stop_early = trains_on_standin_data(code, cwd)
    command = ["bash", "-e", "-c", code] if language == "bash" else [str(cwd / ".venv/bin/python"), "-c", code]
    started = None
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        while process.poll() is None and time.perf_counter() - start < budget:
            time.sleep(2)
            if not stop_early:
                continue
            text = log.read_text(errors="replace")
            if PROGRESS.search(text):
                break
            if started is None and STARTED.search(text):
                started = time.perf_counter()
            if started is not None and time.perf_counter() - started > grace:
                break
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            text = log.read_text(errors="replace")
            trained = PROGRESS.search(text) or (stop_early and STARTED.search(text))
            return ("trains" if trained else "FAILED (no progress within the budget)"), time.perf_counter() - start
    code_ = process.returncode
    return ("ok" if code_ == 0 else f"FAILED (exit {code_})"), time.perf_counter() - start


def fresh_clone(target: Path) -> Path:
    """``git clone`` of this checkout's HEAD into ``target/densekit``, ``../shared`` linked beside it."""
    clone = target / "densekit"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir() and not (target / "shared").exists():
        (target / "shared").symlink_to(shared.resolve())
    return clone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds per block before it is stopped")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds a stand-in training block runs after its training loop starts")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--skip", action="append", default=[], metavar="COMMAND",
                        help="leave out the bash commands that contain COMMAND as whole words (repeatable)")
    parser.add_argument("--instead", nargs=2, action="append", default=[], metavar=("COMMAND", "RUN"),
                        help="run RUN in place of the bash commands that contain COMMAND as whole words (repeatable)")
    args = parser.parse_args(argv)
    blocks = readme_blocks(args.readme)
    if args.list:
        for index, (language, code) in enumerate(blocks):
            lines = block_commands(code) if language == "bash" else [f"<python, {len(code.splitlines())} lines>"]
            print(f"[{index + 1}] " + "\n    ".join(lines))
        return 0
    target = args.keep or Path(tempfile.mkdtemp(prefix="readme-check-"))
    target.mkdir(parents=True, exist_ok=True)
    clone = fresh_clone(target)
    write_standin_datasets(clone)
    results = []
    for index, (language, code) in enumerate(blocks):
        log = target / f"block_{index + 1:02d}.log"
        if language == "bash" and (args.skip or args.instead):
            code, dropped = without_skipped(code, args.skip, dict(args.instead))
            for command in dropped:
                replaced = replacement(command, dict(args.instead))
                label = f"instead: {replaced}" if replaced else "skipped"
                print(f"[{index + 1}/{len(blocks)}] {label:<17} {command}", flush=True)
            if all(command == ":" for command in block_commands(code)):
                continue  # nothing of the block left to run
        status, seconds = run_block(language, code, clone, args.budget, args.grace, log)
        results.append(status)
        first = (block_commands(code) or ["python"])[0] if language == "bash" else "<python block>"
        print(f"[{index + 1}/{len(blocks)}] {status:<8} {seconds:7.1f} s  {first}", flush=True)
    failed = [status for status in results if status.startswith("FAILED")]
    print(f"\n{len(results) - len(failed)}/{len(results)} README blocks ran as written (logs: {target}/block_NN.log)")
    if not args.keep and not failed:
        shutil.rmtree(target, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
