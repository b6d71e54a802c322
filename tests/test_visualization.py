"""Pictures: the one default palette, and montages of volume slices with their labels and a legend."""
from __future__ import annotations

import cv2
import numpy as np

import densekit.datasets
from densekit.visualization import default_palette, montage, write_image


def _volume(depth: int = 10, height: int = 40, width: int = 36) -> np.ndarray:
    volume = np.zeros((depth, height, width), np.float32)
    volume[:, 10:30, 8:20] = 0.5
    volume[2:6, 15:25, 22:32] = 1.0
    return volume


def test_default_palette_is_mmsegs_and_the_datasets_use_the_same_one():
    assert default_palette(5) == np.random.RandomState(42).randint(0, 255, (5, 3)).tolist()
    assert densekit.datasets.default_palette is default_palette
    state = np.random.get_state()[1].copy()
    default_palette(3)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the global generator is left alone


def test_montage_grid_of_overlays(tmp_path):
    volume = _volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:8, 10:30, 8:20] = 1
    labels[4, 15:25, 22:32] = 2
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    grid = montage(volume, labels, palette, n=4)
    assert grid.shape == (2 * (14 + 40), 2 * 36, 3) and grid.dtype == np.uint8  # each tile under a 14-px caption
    assert (grid[..., 0] > grid[..., 1]).any()  # red overlay present
    assert montage(volume, labels, palette, n=16, tile_size=20).shape == (2 * (14 + 20), 3 * 18, 3)  # 6 labelled
    assert montage(volume, None, palette, n=16).shape == (3 * (14 + 40), 4 * 36, 3)  # 10 slices: 3 rows of 4
    path = write_image(tmp_path / "montage.png", grid[..., ::-1])  # RGB montage, BGR writer
    assert cv2.imread(str(path)).shape == grid.shape


def test_montage_legend_names_the_foreground_classes():
    volume = _volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:8, 10:30, 8:20] = 1
    labels[5, 15:25, 22:32] = 2
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    plain = montage(volume, labels, palette, n=4)
    with_legend = montage(volume, labels, palette, n=4, class_names=["background", "liver", "spleen"])
    assert with_legend.shape == (plain.shape[0] + 2 * 22, plain.shape[1], 3)  # 72 px wide: one class per row
    np.testing.assert_array_equal(with_legend[: plain.shape[0]], plain)
    strip = with_legend[plain.shape[0]:]
    assert (strip == [255, 0, 0]).all(-1).sum() == 15 * 15 and (strip == [0, 255, 0]).all(-1).sum() == 15 * 15
    assert not (strip == [0, 0, 0]).all(-1)[:, :22].any()  # background (class 0) gets no swatch


def test_montage_slice_numbers_sit_above_the_tiles_and_the_legend_lists_only_present_classes():
    volume = _volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:8, 10:30, 8:20] = 1
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    grid = montage(volume, labels, palette, n=4)
    picks = [2, 4, 5, 7]  # montage_slices over the labelled slices 2..7
    for i, k in enumerate(picks):
        r, c = divmod(i, 2)
        tile = grid[r * 54 + 14:(r + 1) * 54, c * 36:(c + 1) * 36]
        gray = np.clip(volume[k] / 1.0, 0, 1) * 255
        unlabelled = labels[k] == 0
        # the tile's top-left pixels, where the number used to be drawn, are the image's own
        np.testing.assert_allclose(tile[:12, :20][unlabelled[:12, :20]], np.repeat(gray[:12, :20][
            unlabelled[:12, :20]][:, None], 3, 1).astype(np.uint8), atol=1)
        assert grid[r * 54:r * 54 + 14, c * 36:(c + 1) * 36].max() > 200  # the number, in its strip
    with_legend = montage(volume, labels, palette, n=4, class_names=["background", "liver", "spleen"])
    strip = with_legend[grid.shape[0]:]
    assert strip.shape[0] == 22  # one class listed
    assert (strip == [255, 0, 0]).all(-1).sum() == 15 * 15 and not (strip == [0, 255, 0]).all(-1).any()
