"""``densekit.datasets.medical.zoom``: batched torch zooms equal ``scipy.ndimage.zoom`` slice by slice."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from densekit.datasets.medical.zoom import zoom_images, zoom_index, zoom_labels, zoom_matrix

SIZES = [((512, 512), (224, 224)), ((40, 36), (24, 24)), ((17, 30), (32, 8)), ((9, 9), (9, 9)), ((1, 5), (1, 3))]


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_zoom_images_equals_scipy_cubic_spline_zoom(src, dst):
    slices = np.random.default_rng(0).random((3, *src)).astype(np.float32)
    expected = np.stack([ndimage.zoom(s, (dst[0] / src[0], dst[1] / src[1]), order=3) for s in slices])
    got = zoom_images(torch.from_numpy(slices)[:, None], dst)[:, 0].numpy()
    assert got.shape == expected.shape == (3, *dst)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    double = zoom_images(torch.from_numpy(slices).double(), dst).numpy()  # float64 in, float64 maps
    np.testing.assert_allclose(double, np.stack([ndimage.zoom(s.astype(np.float64), (dst[0] / src[0],
                               dst[1] / src[1]), order=3) for s in slices]), atol=1e-12)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_zoom_labels_equals_scipy_nearest_zoom(src, dst):
    labels = np.random.default_rng(1).integers(0, 9, (2, *dst))
    expected = np.stack([ndimage.zoom(s, (src[0] / dst[0], src[1] / dst[1]), order=0) for s in labels])
    np.testing.assert_array_equal(zoom_labels(torch.from_numpy(labels), src).numpy(), expected)


def test_maps_are_cached_and_shaped():
    assert zoom_matrix(512, 224) is zoom_matrix(512, 224)
    assert zoom_matrix(512, 224).shape == (224, 512)
    np.testing.assert_allclose(zoom_matrix(7, 7), np.eye(7), atol=1e-12)  # no resize: identity
    np.testing.assert_array_equal(zoom_index(4, 8), [0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="zoom sizes must be >= 1"):
        zoom_matrix(0, 4)


def test_autocast_does_not_lower_the_resize_precision():
    x = torch.rand(2, 1, 40, 36)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = zoom_images(x, (24, 24))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, zoom_images(x, (24, 24)), rtol=0, atol=0)
