"""Swin window-attention maps: geometry of regular and shifted windows, agreement with brute-force attention over
the whole feature map, and the ``densekit visualize-attention`` command."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from densekit.backbones.swin import SwinTransformer
from densekit.cli.visualize_attention import main as visualize_attention
from densekit.datasets.seg.demo import make_demo_scene
from densekit.inference.attention_maps import (
    attention_picture,
    capture_window_attention,
    find_swin,
    image_to_input,
    upsample_to_image,
)

# 60 x 52 pixels, patch 4: stage 0 is 15 x 13 tokens, padded to 16 x 16 for window 4 (shift 2); stage 1 is 8 x 7.
HEIGHT, WIDTH, WINDOW = 60, 52, 4


def tiny_swin(**kwargs) -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=WINDOW, drop_path_rate=0.0,
                           out_indices=(0, 1), **kwargs).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    scene, _ = make_demo_scene(seed=0, split=0, index=0, size=(HEIGHT, WIDTH))
    return scene


def uniform_swin() -> SwinTransformer:
    """Zero q/k projections and bias tables: attention is uniform over each (shift-masked) window region."""
    model = tiny_swin()
    with torch.no_grad():
        for stage in model.stages:
            for block in stage.blocks:
                block.attn.qkv.weight.zero_()
                block.attn.qkv.bias.zero_()
                block.attn.relative_position_bias_table.zero_()
    return model


@pytest.mark.parametrize("block, rows, cols", [
    (0, range(4, 8), range(8, 12)),  # regular windows: token (5, 9) sits in window rows 4..7, cols 8..11
    (1, range(2, 6), range(6, 10)),  # shifted by 2: windows start at 2, 6, 10, ...: rows 2..5, cols 6..9
])
def test_query_map_is_uniform_over_the_query_window(image, block, rows, cols):
    maps = capture_window_attention(uniform_swin(), image_to_input(None, image), stage=0, block=block)
    assert (maps.height, maps.width, maps.window, maps.shift, maps.stride) == (15, 13, 4, 2 * block, 4)
    # token (row 5, col 9) covers pixels x 36..39, y 20..23
    query = maps.query_map(x=37, y=22, head=1)
    expected = np.zeros((15, 13), np.float32)
    expected[np.ix_(rows, cols)] = 1 / 16
    np.testing.assert_allclose(query, expected, atol=1e-6)
    assert query[5, 9] > 0 and query.sum() == pytest.approx(1.0, abs=1e-5)


def test_shifted_windows_wrap_into_separate_regions(image):
    """The corner token of a shifted block is in the 2 x 2 region the roll brought to the far window; the cross
    -region keys of that window (masked with -100) get no weight, and the map is not wrapped to the far side."""
    maps = capture_window_attention(uniform_swin(), image_to_input(None, image), stage=0, block=1)
    query = maps.query_map(x=0, y=0, crop=False)
    expected = np.zeros((16, 16), np.float32)
    expected[:2, :2] = 1 / 4
    np.testing.assert_allclose(query, expected, atol=1e-6)
    # a token whose window holds padding: the padded map still sums to 1, the cropped one less
    bottom = maps.query_map(x=50, y=58, crop=False)
    assert bottom.sum() == pytest.approx(1.0, abs=1e-5)
    assert 0 < maps.query_map(x=50, y=58).sum() < 1


def brute_force_query_row(model: SwinTransformer, image: torch.Tensor, stage: int, block: int, token: tuple[int, int],
                          head: int) -> np.ndarray:
    """Attention of one token over the whole padded feature map, keys restricted to its window by window ids
    computed on the unrolled grid (shifted windows start at ``shift``, ``shift + W``, ...; the first ``shift``
    rows and columns form their own group), with the relative bias looked up from the offset."""
    captured = {}
    target = model.stages[stage].blocks[block]
    handle = target.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model(image)
    handle.remove()
    x = captured["x"][0]  # (h, w, C), the block input
    h, w, c = x.shape
    window = min(WINDOW, h, w)
    shift = target.shift_size if min(h, w) > WINDOW else 0
    hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
    with torch.no_grad():
        y = torch.nn.functional.pad(target.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        q, k, _ = target.attn.qkv(y).view(hp, wp, 3, target.attn.num_heads, -1)[..., head, :].unbind(2)
    rows, cols = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing="ij")
    group = torch.div(rows - shift, window, rounding_mode="floor") * 1000 + torch.div(cols - shift, window,
                                                                                          rounding_mode="floor")
    r, c0 = token
    logits = (k * q[r, c0]).sum(-1) * target.attn.scale
    table = target.attn.relative_position_bias_table[:, head]
    dy, dx = (r - rows).clamp(1 - window, window - 1), (c0 - cols).clamp(1 - window, window - 1)  # keys out of
    logits = logits + table[(dy + window - 1) * (2 * window - 1) + dx + window - 1].detach()  # reach masked below
    logits[group != group[r, c0]] = -math.inf
    return logits.flatten().softmax(0).view(hp, wp).numpy()


@pytest.mark.parametrize("stage, block", [(0, 0), (0, 1), (1, 1)])
def test_query_map_matches_brute_force_attention(image, stage, block):
    model = tiny_swin()
    tensor = image_to_input(None, image)
    maps = capture_window_attention(model, tensor, stage, block)
    x, y = 37, 45
    token = maps.token_of_pixel(x, y)
    expected = brute_force_query_row(model, tensor, stage, block, token, head=1)
    got = maps.query_map(x, y, head=1, crop=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[token] > 0 and got.min() >= 0 and got.max() <= 1


def test_received_map_sums_to_one_per_window(image):
    model = tiny_swin()
    for block in (0, 1):
        maps = capture_window_attention(model, image_to_input(None, image), stage=0, block=block)
        received = maps.received_map(crop=False)
        assert received.shape == (16, 16) and received.min() >= 0 and received.max() <= 1
        assert received.sum() == pytest.approx(16.0, abs=1e-4)  # 16 windows of 4 x 4 tokens, each summing to 1
        # with the roll undone, the shifted block's windows are the 4 x 4 cells starting at 2 (wrapping for the rim)
        rolled = np.roll(received, (-2 * block, -2 * block), axis=(0, 1))
        cells = rolled.reshape(4, 4, 4, 4).sum((1, 3))
        np.testing.assert_allclose(cells, 1.0, atol=1e-5)
        assert maps.received_map(head=0).shape == (15, 13)


def test_capture_leaves_the_fast_path_output_unchanged(image):
    model = tiny_swin()
    tensor = image_to_input(None, image)
    with torch.no_grad():
        before = model(tensor)
    capture_window_attention(model, tensor, stage=1, block=1)
    with torch.no_grad():
        after = model(tensor)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not model.stages[1].blocks[1].attn._forward_pre_hooks  # hooks removed


def test_errors_name_what_is_missing(image):
    model = tiny_swin()
    tensor = image_to_input(None, image)
    with pytest.raises(ValueError, match="stage 5 does not exist"):
        capture_window_attention(model, tensor, stage=5, block=0)
    with pytest.raises(ValueError, match="block 2 does not exist"):
        capture_window_attention(model, tensor, stage=0, block=2)
    maps = capture_window_attention(model, tensor, stage=0, block=0)
    with pytest.raises(ValueError, match="head 2 does not exist"):
        maps.query_map(1, 1, head=2)
    with pytest.raises(ValueError, match="outside the 52x60 image"):
        maps.query_map(52, 1)
    with pytest.raises(ValueError, match="SwinTransformer"):
        find_swin(torch.nn.Conv2d(3, 3, 1))


def test_attention_picture_has_the_image_size(image, tmp_path):
    picture, raw, maps = attention_picture(tiny_swin(), image, stage=1, block=1, head=0, query=(30, 40))
    assert picture.shape == image.shape and picture.dtype == np.uint8
    assert raw.shape == (8, 7) and maps.stride == 8
    assert not np.array_equal(picture, image)  # the heat map is drawn
    big = upsample_to_image(raw, maps.stride, image.shape[:2])
    assert big.shape == image.shape[:2] and big[41, 30] == raw[5, 3]


def test_visualize_attention_command(image, tmp_path):
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image)
    out = tmp_path / "attn.png"
    config = "configs/upernet_swin_t_demo.py"
    assert visualize_attention([config, str(path), "--stage", "1", "--block", "1", "--head", "2",
                                "--query", "20", "30", "--out", str(out), "--save-npy"]) == 0
    written = cv2.imread(str(out))
    assert written is not None and written.shape == (HEIGHT, WIDTH, 3)
    raw = np.load(tmp_path / "attn.npy")
    assert raw.shape == (8, 7) and 0 <= raw.min() and raw.max() <= 1  # stage 1 of swin_t: stride 8, one 7-window
    assert raw.sum() == pytest.approx(1.0, abs=1e-5)  # 8 x 7 grid: window 7, the query's window rows 0..6
    with pytest.raises(SystemExit):
        visualize_attention([config, str(path), "--stage", "7", "--out", str(out)])
