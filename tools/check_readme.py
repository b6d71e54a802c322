"""Run every command the README shows, in its order, in a fresh clone, as a newcomer would.

    python tools/check_readme.py                  # all commands; exit 1 if one fails
    python tools/check_readme.py --list           # only print the commands it would run
    python tools/check_readme.py --keep /tmp/rc   # keep the clone for a look afterwards

Commands are the lines of the README's ```bash blocks (backslash continuations joined, ``#`` comments
dropped), run one after the other with ``bash -e`` in a fresh ``git clone`` of this repository's HEAD, with
``../shared`` linked beside the clone when this checkout has one. Later commands use what earlier ones
wrote (the demo's checkpoint, converted files), exactly as for a reader going top to bottom.

Full datasets are downloads a fresh machine does not have, so before the first command the clone gets
*stand-in* datasets in the layouts the README documents (ADE20K, COCO, Synapse: a few generated images or
volumes each, see ``write_standin_datasets``). A command passes when it exits with status 0. The recipes for
those datasets train for days: a command still running after ``--budget`` seconds passes if its output
shows training progress (mmengine's ``Iter(train)`` / ``Epoch(train)`` log lines), and is then stopped;
a ``tools/train.py`` command on a config that reads stand-in data is stopped as soon as it shows progress.
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


def readme_commands(readme: Path) -> list[str]:
    """The commands of ``readme``'s ```bash blocks, in order."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", readme.read_text(), re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = strip_comment(line).strip()
            if line:
                commands.append(line)
    return commands


# ------------------------------------------------------------------------------------------- stand-in data
def _write_ade(root: Path, count: int = 4) -> None:
    """ADEChallengeData2016 layout: images/{training,validation}/*.jpg, annotations/*.png (0 = ignore, 1..150)."""
    from densekit.datasets.demo import make_demo_scene

    for split_id, split in enumerate(("training", "validation")):
        for i in range(count):
            image, mask = make_demo_scene(seed=7, split=split_id, index=i, size=(256, 320))
            name = f"ADE_{'train' if split_id == 0 else 'val'}_{i:08d}"
            for folder, suffix, array in (("images", ".jpg", image), ("annotations", ".png", mask)):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / folder / split / f"{name}{suffix}"), array)


def _write_coco(root: Path, count: int = 4) -> None:
    """COCO 2017 layout from the generated demo detection data: train2017/, val2017/, annotations/."""
    from densekit.datasets.demo_det import make_demo_det_dataset

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
def trains_on_standin_data(command: str, cwd: Path) -> bool:
    """Whether ``command`` is ``tools/train.py`` on a config whose data root is one of the stand-ins."""
    match = re.search(r"tools/train\.py\s+(configs/\S+\.py)", command)
    if not match or not (cwd / match[1]).is_file():
        return False
    text = (cwd / match[1]).read_text()
    base = re.search(r"_base_\s*=\s*[\"'](\S+)[\"']", text)
    if base and (cwd / "configs" / base[1]).is_file():
        text += (cwd / "configs" / base[1]).read_text()
    return any(root in text for root in STANDIN_ROOTS)


def run_command(command: str, cwd: Path, budget: float, log: Path) -> tuple[str, float]:
    """``('ok' | 'trains' | 'FAILED (exit N)' | 'FAILED (no progress after budget)', seconds)``."""
    start = time.perf_counter()
    stop_early = trains_on_standin_data(command, cwd)
    with open(log, "w") as out:
        process = subprocess.Popen(["bash", "-e", "-c", command], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        while process.poll() is None and time.perf_counter() - start < budget:
            time.sleep(2)
            if stop_early and PROGRESS.search(log.read_text(errors="replace")):
                break
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            trained = PROGRESS.search(log.read_text(errors="replace"))
            return ("trains" if trained else "FAILED (no progress after budget)"), time.perf_counter() - start
    code = process.returncode
    return ("ok" if code == 0 else f"FAILED (exit {code})"), time.perf_counter() - start


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
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per command before it is stopped")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    commands = readme_commands(args.readme)
    if args.list:
        print("\n".join(commands))
        return 0
    target = args.keep or Path(tempfile.mkdtemp(prefix="readme-check-"))
    target.mkdir(parents=True, exist_ok=True)
    clone = fresh_clone(target)
    write_standin_datasets(clone)
    results = []
    for index, command in enumerate(commands):
        status, seconds = run_command(command, clone, args.budget, target / f"command_{index:02d}.log")
        results.append((status, seconds, command))
        print(f"[{index + 1}/{len(commands)}] {status:<8} {seconds:7.1f} s  {command}", flush=True)
    failed = [r for r in results if r[0].startswith("FAILED")]
    print(f"\n{len(results) - len(failed)}/{len(results)} README commands ran as written "
          f"(logs in {target}/command_NN.log)")
    if not args.keep and not failed:
        shutil.rmtree(target, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
