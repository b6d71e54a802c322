"""``densekit train`` mistakes end in one ``error:`` paragraph with status 1, no traceback on the terminal and
nothing left behind (no work dir): a value of the wrong type, class counts that disagree, a missing Synapse or
NIfTI dataset, a bad sample in a --data folder (truncated PNG, mask value 200), mixed image suffixes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.own_data import make_folder


def train(tmp_path: Path, *args: str | Path) -> str:
    """Run ``densekit train ARGS --work-dir tmp/W``, check the refusal, return the output."""
    proc = subprocess.run([sys.executable, "-m", "densekit", "train", *map(str, args), "--work-dir",
                           str(tmp_path / "W")], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("error: "), output
    assert output.count("error:") == 1, output
    assert not (tmp_path / "W").exists() and not (tmp_path / "work_dirs").exists()
    return lines[-1]


def test_a_value_of_the_wrong_type(tmp_path):
    message = train(tmp_path, "upernet_swin_t_demo", "--cfg-options", "optim_wrapper.optimizer.lr=abc")
    assert "optim_wrapper.optimizer.lr must be a number" in message and "'abc'" in message
    assert not (tmp_path / "data").exists()  # refused before the demo data is generated


def test_seven_classes_against_an_explicit_six_output_head(tmp_path):
    folder = make_folder(tmp_path / "d", classes=[f"c{i}" for i in range(7)])
    message = train(tmp_path, "upernet_swin_t_demo", "--data", folder, "--cfg-options",
                    "model.decode_head.num_classes=6")
    assert "names 7 classes" in message and "model.decode_head.num_classes=6" in message


def test_a_missing_synapse_dataset(tmp_path):
    message = train(tmp_path, "swin_unet_t_synapse", "--cfg-options", f"data_root={tmp_path / 'nowhere'}")
    assert "lists_Synapse/train.txt does not exist" in message


def test_a_missing_nifti_dataset(tmp_path):
    message = train(tmp_path, "swin_unet_t_nifti")
    assert "my_volumes" in message and "imagesTr" in message


@pytest.mark.parametrize("defect", ["truncated", "mask200"])
def test_a_bad_sample_in_a_data_folder(tmp_path, defect):
    folder = make_folder(tmp_path / "d")
    if defect == "truncated":
        path = folder / "images" / "train" / "1.png"
        path.write_bytes(path.read_bytes()[:200])
    else:
        cv2.imwrite(str(folder / "masks" / "train" / "1.png"), np.full((32, 32), 200, np.uint8))
    message = train(tmp_path, "upernet_swin_t_demo", "--data", folder)
    assert "SegDataset[1]" in message and "train/1.png" in message
    assert "on_bad_sample='skip'" in message


def test_mixed_image_suffixes(tmp_path):
    folder = make_folder(tmp_path / "d")
    cv2.imwrite(str(folder / "images" / "val" / "x.jpg"), np.zeros((8, 8, 3), np.uint8))
    message = train(tmp_path, "upernet_swin_t_demo", "--data", folder)
    assert "images/val mixes image suffixes (2 .png, 1 .jpg)" in message


def test_a_bad_sample_found_by_a_dataloader_worker_keeps_only_the_dataset_message():
    """Past the up-front check (datasets of more than 1000 samples), torch re-raises a worker's error with the
    worker's traceback in the message; the terminal gets the dataset's own sentence."""
    from torch._utils import ExceptionWrapper

    from densekit.cli.train import _bad_sample_message
    from densekit.datasets.bad_samples import BadSampleError

    try:
        raise BadSampleError("SegDataset[7] (a.png): mask a.png has label values {200} outside 0..5")
    except BadSampleError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadSampleError) as info:
        wrapped.reraise()
    assert "Traceback" in str(info.value)
    assert _bad_sample_message(info.value) == "SegDataset[7] (a.png): mask a.png has label values {200} outside 0..5"
