"""Patch embedding, merging and expanding for hierarchical transformers, on NHWC maps of any size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tracing import is_tracing


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution followed by a LayerNorm.

    Inputs whose sides are not multiples of ``patch`` are zero-padded on the right and bottom,
    as mmsegmentation and HuggingFace do, so the output has ``ceil(H/patch) x ceil(W/patch)`` tokens.
    (``densekit.accel.swin`` runs ``project`` as one GEMM of the unfolded patches on the CPU.)

    Args:
        in_chans: input channels.
        embed_dim: output channels ``C``.
        patch_size: patch side (4 for Swin).
        norm: apply LayerNorm after the projection (Swin's ``patch_norm``).
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 96, patch_size: int = 4, norm: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, ceil(H/p), ceil(W/p), C)``."""
        return self.norm(self.project(self.pad(x)))

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, in_chans, H', W')``, zero-padded to multiples of the patch."""
        if x.dim() != 4 or x.shape[1] != self.proj.in_channels:  # named here, not deep inside a kernel
            raise ValueError(f"PatchEmbed expects (B, {self.proj.in_channels}, H, W), got {tuple(x.shape)}")
        p = self.patch_size
        pad_h, pad_w = (-x.shape[2]) % p, (-x.shape[3]) % p
        if is_tracing() or pad_h or pad_w:  # unconditional in a recorded graph: any size, not this one's branch
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The patch convolution: ``(B, in_chans, H, W)``, sides multiples of ``patch`` -> ``(B, H/p, W/p, C)``."""
        return self.proj(x).permute(0, 2, 3, 1)


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood and project ``4C -> 2C`` (halves the resolution).

    The neighbours are concatenated in the official Swin / timm order ``[x0, x1, x2, x3]`` =
    offsets (row, col) ``(0,0), (1,0), (0,1), (1,1)``; mmsegmentation's ``nn.Unfold`` layout differs
    and is converted on load (``densekit.convert.mmseg``). Odd sides are zero-padded first.

    Args:
        dim: input channels ``C``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        return self.reduction(self.norm(self.neighbours(x)))

    @staticmethod
    def neighbours(x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 4C)``: each 2x2 neighbourhood's channels side by side."""
        b, h, w, c = x.shape
        if is_tracing() or h % 2 or w % 2:  # unconditional in a recorded graph (see PatchEmbed)
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        # (B, H/2, row, W/2, col, C) -> (B, H/2, W/2, col, row, C): col-major neighbours = [x0, x1, x2, x3]
        return x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)


def tokens_to_pixels(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Spread each token's channels over a ``scale x scale`` block of pixels.

    Swin-Unet's ``rearrange(x, 'b h w (p1 p2 c) -> b (h p1) (w p2) c', p1=s, p2=s)``: channel
    ``(p1 * s + p2) * c_out + k`` of token ``(h, w)`` becomes channel ``k`` of pixel ``(h*s + p1, w*s + p2)``.

    Args:
        x: ``(B, H, W, s*s*C)``.
        scale: ``s``.

    Returns:
        ``(B, s*H, s*W, C)``.
    """
    b, h, w, c = x.shape
    if c % (scale * scale):
        raise ValueError(f"{c} channels do not split into {scale}x{scale} blocks")
    c_out = c // (scale * scale)
    x = x.reshape(b, h, w, scale, scale, c_out).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * scale, w * scale, c_out)


class PatchExpand(nn.Module):
    """Swin-Unet's 2x upsampling: project ``C -> 2C`` (no bias), spread over 2x2 pixels of ``C/2``, LayerNorm.

    Args:
        dim: input channels ``C`` (even).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"PatchExpand needs an even number of channels, got {dim}")
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, 2H, 2W, C/2)``."""
        return self.norm(tokens_to_pixels(self.expand(x), 2))


class FinalPatchExpand(nn.Module):
    """Swin-Unet's ``FinalPatchExpand_X4``: project ``C -> s*s*C`` (no bias), spread over s x s pixels of ``C``,
    LayerNorm; back to the input resolution when ``s`` is the patch size.

    Args:
        dim: channels ``C`` (kept).
        scale: upsampling factor ``s`` (4, the Swin patch size).
    """

    def __init__(self, dim: int, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, s*H, s*W, C)``."""
        return self.norm(tokens_to_pixels(self.expand(x), self.scale))
