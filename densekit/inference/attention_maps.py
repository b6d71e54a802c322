"""Where a Swin block looks: its window-attention weights, stitched back into image coordinates.

A Swin block pads its normed input to window multiples, rolls it by ``-shift`` (odd blocks), cuts it into
``window x window`` windows and attends inside each. ``capture_window_attention`` hooks the chosen block's
``WindowAttention`` and recomputes the weights from the module's own input with its reference path
(``WindowAttention.attention_weights``: the same qkv, relative bias and shift mask), leaving the fast SDPA
forward untouched. ``WindowAttentionMaps`` then undoes the geometry: a window row is placed back on the padded,
rolled grid, rolled by ``+shift`` so it lines up with the image, and the padding is cropped. The result is a
map on the stage's feature grid ``(ceil(H / s), ceil(W / s))``, ``s = patch_size * 2**stage``;
``upsample_to_image`` spreads each token over its ``s x s`` pixels and crops to ``(H, W)``.

Example::

    maps = capture_window_attention(backbone, image, stage=1, block=1)   # image (1, 3, H, W) normalised
    where = maps.query_map(x=120, y=64, head=0)       # (h, w): weights that pixel's token gives, sum 1
    received = maps.received_map()                    # (h, w): mean over queries (and heads), per key
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from ..backbones.swin import SwinTransformer
from ..layers.window_attention import pad_and_shift, reverse_windows
from ..visualization import heatmap_overlay


@dataclass
class WindowAttentionMaps:
    """Attention weights of one block for one image, with the geometry to place them.

    Attributes:
        weights: ``(nW, nH, N, N)`` float32, ``N = window^2``; windows in ``partition_windows`` order over the
            padded, rolled ``(padded_height, padded_width)`` grid; rows (queries) sum to 1.
        height, width: the stage's feature grid (unpadded).
        window, shift: window side and cyclic shift the block used at this resolution.
        stride: image pixels per token along each side.
        image_size: ``(H, W)`` of the input image.
    """

    weights: torch.Tensor
    height: int
    width: int
    window: int
    shift: int
    stride: int
    image_size: tuple[int, int]

    @property
    def padded_size(self) -> tuple[int, int]:
        return -(-self.height // self.window) * self.window, -(-self.width // self.window) * self.window

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def _heads(self, head: int | None) -> torch.Tensor:
        """``(nW, N, N)`` for one head, or the mean over heads when ``head`` is None."""
        if head is None:
            return self.weights.mean(1)
        if not 0 <= head < self.num_heads:
            raise ValueError(f"head {head} does not exist: this block has heads 0..{self.num_heads - 1}")
        return self.weights[:, head]

    def token_of_pixel(self, x: int, y: int) -> tuple[int, int]:
        """Feature-grid ``(row, col)`` of the token whose patch holds image pixel ``(x, y)``."""
        height, width = self.image_size
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"query pixel (x={x}, y={y}) lies outside the {width}x{height} image")
        return min(y // self.stride, self.height - 1), min(x // self.stride, self.width - 1)

    def _unroll(self, rolled: torch.Tensor, crop: bool) -> np.ndarray:
        """A ``(Hp, Wp)`` map on the rolled grid -> image-aligned ``(h, w)`` (or ``(Hp, Wp)`` if not ``crop``)."""
        if self.shift:  # the block rolled by -shift before partitioning
            rolled = torch.roll(rolled, shifts=(self.shift, self.shift), dims=(0, 1))
        if crop:
            rolled = rolled[: self.height, : self.width]
        return rolled.numpy().astype(np.float32)

    def query_map(self, x: int, y: int, head: int | None = None, crop: bool = True) -> np.ndarray:
        """Weights the token under image pixel ``(x, y)`` gives to every key, on the feature grid.

        Returns ``(h, w)`` float32 in [0, 1], zero outside the query's window; over the padded grid
        (``crop=False``, ``(Hp, Wp)``) it sums to 1, cropped it misses what went to padding tokens.
        """
        row, col = self.token_of_pixel(x, y)
        hp, wp = self.padded_size
        qy, qx = (row - self.shift) % hp, (col - self.shift) % wp  # the query's place on the rolled grid
        w = self.window
        index = (qy // w) * (wp // w) + qx // w
        rolled = torch.zeros(hp, wp)
        row_weights = self._heads(head)[index, (qy % w) * w + qx % w]
        rolled[qy // w * w:(qy // w + 1) * w, qx // w * w:(qx // w + 1) * w] = row_weights.view(w, w)
        return self._unroll(rolled, crop)

    def received_map(self, head: int | None = None, crop: bool = True) -> np.ndarray:
        """Mean attention each key receives from the queries of its window, ``(h, w)`` float32 in [0, 1].

        Every window's values sum to 1 (rows of the attention sum to 1), so the padded map sums to the number
        of windows.
        """
        received = self._heads(head).mean(1)  # (nW, N): column mean over queries
        hp, wp = self.padded_size
        rolled = reverse_windows(received[..., None], self.window, hp, wp)[0, ..., 0]
        return self._unroll(rolled, crop)


class _Captured(Exception):
    """Stops the backbone once the chosen block's weights are taken."""


def find_swin(model: nn.Module) -> nn.Module:
    """The densekit ``SwinTransformer`` of ``model``: the model itself or its ``backbone``."""
    for candidate in (model, getattr(model, "backbone", None)):
        if isinstance(candidate, SwinTransformer):
            return candidate
    backbone = getattr(model, "backbone", None)
    raise ValueError(f"attention maps need densekit's SwinTransformer, but {type(model).__name__} has backbone "
                     f"{type(backbone).__name__}; use an UPerNet-Swin or Swin-Unet config, or --model swin_t")


def capture_window_attention(backbone: nn.Module, image: torch.Tensor, stage: int, block: int) -> WindowAttentionMaps:
    """Run ``backbone`` on ``image`` ``(1, C, H, W)`` (normalised) and keep block ``block`` of stage ``stage``'s
    attention weights (reference path, float32, on the CPU)."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, H, W), got {tuple(image.shape)}")
    if not 0 <= stage < len(backbone.stages):
        raise ValueError(f"stage {stage} does not exist: this Swin has stages 0..{len(backbone.stages) - 1}")
    blocks = backbone.stages[stage].blocks
    if not 0 <= block < len(blocks):
        raise ValueError(f"block {block} does not exist: stage {stage} has blocks 0..{len(blocks) - 1}")
    target = blocks[block]
    seen: dict = {}

    def on_block(module, args):
        x = args[0]
        window, shift = module.window_and_shift(x.shape[1], x.shape[2])
        y = pad_and_shift(module.norm1(x), window, shift)  # what the block's attention sees
        weights, _ = module.attn.attention_weights(y, window, shift)
        seen.update(grid=tuple(x.shape[1:3]), weights=weights.float().cpu(), window=window, shift=shift)
        raise _Captured  # the rest of the network is not needed

    handle = target.register_forward_pre_hook(on_block)
    try:
        with torch.no_grad():
            backbone(image)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "weights" not in seen:
        raise RuntimeError(f"stage {stage} block {block} did not run: is the stage past the backbone's out_indices?")
    height, width = seen["grid"]
    return WindowAttentionMaps(seen["weights"], height, width, seen["window"], seen["shift"],
                               backbone.patch_size * 2**stage, tuple(image.shape[-2:]))


def image_to_input(model: nn.Module, image: np.ndarray, in_chans: int = 3) -> torch.Tensor:
    """BGR uint8 ``(H, W, 3)`` -> ``(1, in_chans, H, W)`` normalised as ``model.data_preprocessor`` does (mean,
    std, channel order); a one-channel preprocessor (Swin-Unet) gets the grey image, repeated to ``in_chans``."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got an array of shape {image.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    pre = getattr(model, "data_preprocessor", None)
    if pre is not None and hasattr(pre, "normalize"):
        if pre.mean.numel() == 1:
            grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            tensor = torch.from_numpy(grey)[None].float()
        tensor = pre.normalize(tensor).cpu()
    else:  # a bare backbone: ImageNet statistics, RGB
        mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
        tensor = (tensor.flip(0) - mean) / std
    if tensor.shape[0] == 1 and in_chans != 1:
        tensor = tensor.expand(in_chans, -1, -1)
    return tensor[None].contiguous()


def upsample_to_image(feature_map: np.ndarray, stride: int, image_size: tuple[int, int],
                      interpolation: str = "nearest") -> np.ndarray:
    """``(h, w)`` token map -> ``(H, W)``: each token covers its ``stride x stride`` patch (``'nearest'``) or is
    interpolated between patch centres (``'bilinear'``); the part past the image (padding) is cropped."""
    modes = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}
    if interpolation not in modes:
        raise ValueError(f"interpolation must be one of {sorted(modes)}, got {interpolation!r}")
    h, w = feature_map.shape
    big = cv2.resize(np.ascontiguousarray(feature_map, np.float32), (w * stride, h * stride),
                     interpolation=modes[interpolation])
    return big[: image_size[0], : image_size[1]]


def attention_picture(model: nn.Module, image: np.ndarray, stage: int, block: int, head: int | None = None,
                      query: tuple[int, int] | None = None, interpolation: str = "nearest", alpha: float = 0.5,
                      cmap: str = "jet") -> tuple[np.ndarray, np.ndarray, WindowAttentionMaps]:
    """The heat map of one block over a BGR image ``(H, W, 3)``, at the image's own size.

    ``query`` ``(x, y)`` draws the weights that pixel's token gives (``query_map``, the pixel marked); without
    it, the mean attention each token receives (``received_map``). ``head`` None averages the heads.

    Returns:
        the BGR uint8 overlay ``(H, W, 3)``, the raw map on the feature grid ``(h, w)`` float32 and the
        captured ``WindowAttentionMaps``.
    """
    backbone = find_swin(model)
    device = next(backbone.parameters()).device
    tensor = image_to_input(model, image, backbone.in_chans).to(device)
    maps = capture_window_attention(backbone, tensor, stage, block)
    raw = maps.query_map(*query, head=head) if query is not None else maps.received_map(head=head)
    heat = upsample_to_image(raw, maps.stride, image.shape[:2], interpolation)
    return heatmap_overlay(image, heat, alpha, cmap, marker=query), raw, maps
