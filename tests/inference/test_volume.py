"""Volume inference: batching, resizing (bilinear and the official zoom), normalisation, peak memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densekit.inference.volume import infer_volume


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
