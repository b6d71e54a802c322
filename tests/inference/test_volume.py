"""Volume inference (batching, resizing, peak memory), NIfTI / h5 round trips and overlay montages."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.inference.volume import infer_volume, list_volumes, montage, read_volume, save_h5, save_nifti, save_png

AFFINE = np.array([[-0.7, 0, 0, 120.0], [0, 0.75, 0, -30.0], [0, 0, 3.0, 12.0], [0, 0, 0, 1]])


class Thresholds(nn.Module):
    """A stand-in with Swin-Unet's interface: ``model(x, mode='tensor')`` -> logits ``(B, K, h, w)``.
    Class ``k`` wins where the intensity is nearest ``k / (K - 1)``; ``out_size`` fixes the logits' size."""

    def __init__(self, num_classes: int = 3, out_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.centres = nn.Parameter(torch.linspace(0, 1, num_classes).view(1, -1, 1, 1), requires_grad=False)
        self.out_size = out_size
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor, data_samples=None, mode: str = "tensor") -> torch.Tensor:
        assert mode == "tensor"
        self.calls.append(tuple(x.shape))
        logits = -(x - self.centres) ** 2
        return logits if self.out_size is None else F.interpolate(logits, size=self.out_size, mode="bilinear")


def _volume(depth: int = 10, height: int = 40, width: int = 36) -> np.ndarray:
    volume = np.zeros((depth, height, width), np.float32)
    volume[:, 10:30, 8:20] = 0.5
    volume[2:6, 15:25, 22:32] = 1.0
    return volume


def test_slices_run_in_batches_resized_to_the_input_size_and_back():
    volume = _volume()
    model = Thresholds()
    labels = infer_volume(model, volume, batch_size=4, input_size=(24, 24), progress=False)
    assert model.calls == [(4, 1, 24, 24), (4, 1, 24, 24), (2, 1, 24, 24)]
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, infer_volume(model, volume, batch_size=1, input_size=(24, 24),
                                                       progress=False))
    # Reference: one slice, bicubic down, logits bilinear back up, argmax.
    x = F.interpolate(torch.from_numpy(volume[3])[None, None], size=(24, 24), mode="bicubic", align_corners=False)
    up = F.interpolate(model(x), size=(40, 36), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(labels[3], up.argmax(1)[0].numpy())
    exact = infer_volume(model, volume, batch_size=3, input_size=None, progress=False)  # no resizing at all
    np.testing.assert_array_equal(exact, np.rint(volume * 2).astype(np.uint8))


def test_zoom_resize_reproduces_the_official_slice_loop():
    """``resize='zoom'`` = the official Swin-Unet ``test_single_volume``: per slice ``zoom(order=3)`` to the
    input size, argmax of the logits, ``zoom(order=0)`` of the labels back; batching changes nothing."""
    from scipy.ndimage import zoom

    volume = np.clip(_volume() + np.random.default_rng(0).normal(0, 0.2, _volume().shape), 0, 1).astype(np.float32)
    model = Thresholds()
    labels = infer_volume(model, volume, batch_size=4, input_size=(24, 24), progress=False, resize="zoom")
    assert model.calls == [(4, 1, 24, 24), (4, 1, 24, 24), (2, 1, 24, 24)]
    expected = np.stack([zoom(model(torch.from_numpy(zoom(s, (24 / 40, 24 / 36), order=3))[None, None]).argmax(1)[0]
                              .numpy(), (40 / 24, 36 / 24), order=0) for s in volume])
    assert len(np.unique(expected)) == 3  # every class present: the comparison is not trivial
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="resize must be one of"):
        infer_volume(model, volume, resize="nearest", progress=False)


def test_model_normalisation_is_applied():
    model = Thresholds()
    model.data_preprocessor = nn.Module()
    model.data_preprocessor.register_buffer("mean", torch.tensor([0.5]))
    model.data_preprocessor.register_buffer("std", torch.tensor([0.5]))
    labels = infer_volume(model, _volume(), input_size=None, progress=False)
    # (v - 0.5) / 0.5 maps 0 -> -1 (class 0), 0.5 -> 0 (class 0), 1 -> 1 (class 2)
    assert set(np.unique(labels)) == {0, 2}


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    from test_volume import Thresholds
    from densekit.inference.volume import infer_volume

    torch.set_num_threads(2)
    model = Thresholds(num_classes=9, out_size=(224, 224))
    infer_volume(model, np.zeros((2, 64, 64), np.float32), batch_size=2, progress=False)  # warm up
    volume = np.random.default_rng(0).random((100, 512, 512), dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    labels = infer_volume(model, volume, batch_size=8, input_size=(224, 224), progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(before_kib=before, after_kib=after, calls=model.calls, shape=list(labels.shape))))
""")


def test_peak_memory_holds_one_batch_of_full_resolution_logits():
    """100 slices of 512x512, 9 classes, batches of 8: all full-resolution logits would take
    100 * 9 * 512 * 512 * 4 B = 944 MB; one batch takes 75 MB. The peak RSS growth must stay far below."""
    script = MEMORY_SCRIPT.format(tests=str(Path(__file__).resolve().parent))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    growth_mb = (result["after_kib"] - result["before_kib"]) / 1024
    one_batch_mb = 8 * 9 * 512 * 512 * 4 / 2**20
    all_logits_mb = 100 * 9 * 512 * 512 * 4 / 2**20
    print(f"\npeak RSS growth during infer_volume: {growth_mb:.0f} MiB (one batch of full-resolution logits: "
          f"{one_batch_mb:.0f} MiB, all of them: {all_logits_mb:.0f} MiB)")
    assert result["shape"] == [100, 512, 512]
    assert [tuple(c) for c in result["calls"][1:]] == [(8, 1, 224, 224)] * 12 + [(4, 1, 224, 224)]
    assert growth_mb < 4 * one_batch_mb < all_logits_mb / 3


def test_nifti_round_trip_keeps_the_affine_and_orientation(tmp_path):
    rng = np.random.default_rng(0)
    source = rng.integers(-500, 500, (20, 24, 6)).astype(np.int16)  # nibabel (X, Y, Z)
    nib.save(nib.Nifti1Image(source, AFFINE), str(tmp_path / "scan.nii.gz"))
    volume, spacing, affine = read_volume(str(tmp_path / "scan.nii.gz"))
    assert volume.shape == (6, 20, 24) and spacing == pytest.approx((3.0, 0.7, 0.75))
    np.testing.assert_allclose(affine, AFFINE)
    labels = (volume > 0).astype(np.uint8)
    path = save_nifti(labels, affine, str(tmp_path / "out" / "scan_pred.nii.gz"))
    saved = nib.load(path)
    np.testing.assert_allclose(saved.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), (source > 0).astype(np.uint8))  # overlays the scan
    assert saved.get_data_dtype() == np.uint8
    back, _, back_affine = read_volume(path)
    np.testing.assert_array_equal(back, labels)
    save_nifti(labels, affine, str(tmp_path / "out" / "plain.nii"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plain.nii", "scan_pred.nii.gz"]


def test_h5_volumes_read_and_write(tmp_path):
    volume = _volume(4, 16, 12)
    with h5py.File(tmp_path / "case0001.npy.h5", "w") as f:
        f.create_dataset("image", data=volume)
        f.create_dataset("label", data=(volume > 0).astype(np.float32))
    array, spacing, affine = read_volume(str(tmp_path / "case0001.npy.h5"))
    np.testing.assert_array_equal(array, volume)
    assert spacing == (1.0, 1.0, 1.0) and np.allclose(affine, np.eye(4))
    path = save_h5((volume > 0).astype(np.uint8), str(tmp_path / "pred" / "case0001.npy.h5"), image=volume,
                   spacing=(2.5, 0.8, 0.9))
    label, spacing, affine = read_volume(path, key="label")
    np.testing.assert_array_equal(label, volume > 0)
    assert spacing == (2.5, 0.8, 0.9) and np.allclose(np.diag(affine), [0.8, 0.9, 2.5, 1])
    assert list_volumes(str(tmp_path)) == [str(tmp_path / "case0001.npy.h5")]
    with pytest.raises(ValueError, match="unsupported"):
        read_volume(str(tmp_path / "x.png"))


def test_montage_grid_of_overlays(tmp_path):
    volume = _volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:8, 10:30, 8:20] = 1
    labels[4, 15:25, 22:32] = 2
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    grid = montage(volume, labels, palette, n=4)
    assert grid.shape == (2 * 40, 2 * 36, 3) and grid.dtype == np.uint8
    assert (grid[..., 0] > grid[..., 1]).any()  # red overlay present
    assert montage(volume, labels, palette, n=16, tile_size=20).shape == (2 * 20, 3 * 18, 3)  # 6 labelled slices
    assert montage(volume, None, palette, n=16).shape == (3 * 40, 4 * 36, 3)  # 10 slices: 3 rows of 4
    path = save_png(grid, str(tmp_path / "montage.png"))
    assert cv2.imread(path).shape == grid.shape


def test_montage_legend_names_the_foreground_classes():
    volume = _volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:8, 10:30, 8:20] = 1
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    plain = montage(volume, labels, palette, n=4)
    with_legend = montage(volume, labels, palette, n=4, class_names=["background", "liver", "spleen"])
    assert with_legend.shape == (plain.shape[0] + 2 * 22, plain.shape[1], 3)  # 72 px wide: one class per row
    np.testing.assert_array_equal(with_legend[: plain.shape[0]], plain)
    strip = with_legend[plain.shape[0]:]
    assert (strip == [255, 0, 0]).all(-1).sum() == 15 * 15 and (strip == [0, 255, 0]).all(-1).sum() == 15 * 15
    assert not (strip == [0, 0, 0]).all(-1)[:, :22].any()  # background (class 0) gets no swatch
