"""A compact re-implementation of the official Swin-Unet network, the reference its converters and loaders are
checked against (tests/convert/test_convert_swin_unet.py, tests/backbones/test_pretrained.py,
tests/inference/test_checkpoint.py).

HuCaoFighting/Swin-Unet, ``networks/swin_transformer_unet_skip_expand_decoder_sys.py`` ``SwinTransformerSys``
with ``final_upsample='expand_first'``, and ``networks/vision_transformer.py`` ``SwinUnet``, whose ``swin_unet``
attribute gives the checkpoint keys their ``swin_unet.`` prefix: its module and key names, fixed
``input_resolution`` per block, ``relative_position_index`` and ``attn_mask`` buffers, skips taken before
each encoder stage, ``layers_up``/``concat_back_dim``/``norm_up``/``up``/``output``, and ``load_from``'s
ImageNet rule. einops is replaced by the equivalent ``view``/``permute`` (``_rearrange``).
"""
from __future__ import annotations

import copy

import torch
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torch import nn

T_BACKBONE = dict(embed_dim=96, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.2)


def _rearrange(x: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """einops ``rearrange(x, 'b h w (p1 p2 c) -> b (h p1) (w p2) c', p1=p, p2=p, c=c)``."""
    b, h, w, _ = x.shape
    return x.view(b, h, w, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, c)


def window_partition(x, window_size):
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows, window_size, h, w):
    b = int(windows.shape[0] / (h * w / window_size / window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    def __init__(self, dim, window_size, num_heads, qkv_bias=True):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        coords = torch.stack(torch.meshgrid([torch.arange(window_size[0]), torch.arange(window_size[1])],
                                            indexing="ij"))
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += window_size[0] - 1
        relative_coords[:, :, 1] += window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * window_size[1] - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x, mask=None):
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.softmax(attn)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.shift_size = shift_size
        if min(self.input_resolution) <= self.window_size:
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, to_2tuple(self.window_size), num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        attn_mask = None
        if self.shift_size > 0:
            h, w = self.input_resolution
            img_mask = torch.zeros((1, h, w, 1))
            slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                      slice(-self.shift_size, None))
            cnt = 0
            for hs in slices:
                for ws in slices:
                    img_mask[:, hs, ws, :] = cnt
                    cnt += 1
            mask_windows = window_partition(img_mask, self.window_size).view(-1, self.window_size * self.window_size)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        h, w = self.input_resolution
        b, length, c = x.shape
        assert length == h * w
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_size * self.window_size, c)
        windows = self.attn(windows, mask=self.attn_mask).view(-1, self.window_size, self.window_size, c)
        x = window_reverse(windows, self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.view(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    def __init__(self, input_resolution, dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        h, w = self.input_resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchExpand(nn.Module):
    def __init__(self, input_resolution, dim, dim_scale=2):
        super().__init__()
        self.input_resolution = input_resolution
        self.expand = nn.Linear(dim, 2 * dim, bias=False) if dim_scale == 2 else nn.Identity()
        self.norm = nn.LayerNorm(dim // dim_scale)

    def forward(self, x):
        h, w = self.input_resolution
        x = self.expand(x)
        b, length, c = x.shape
        assert length == h * w
        x = _rearrange(x.view(b, h, w, c), 2, c // 4)
        return self.norm(x.view(b, -1, c // 4))


class FinalPatchExpand_X4(nn.Module):  # noqa: N801  (the official name)
    def __init__(self, input_resolution, dim, dim_scale=4):
        super().__init__()
        self.input_resolution = input_resolution
        self.dim_scale = dim_scale
        self.expand = nn.Linear(dim, 16 * dim, bias=False)
        self.output_dim = dim
        self.norm = nn.LayerNorm(self.output_dim)

    def forward(self, x):
        h, w = self.input_resolution
        x = self.expand(x)
        b, length, c = x.shape
        assert length == h * w
        x = _rearrange(x.view(b, h, w, c), self.dim_scale, c // (self.dim_scale ** 2))
        return self.norm(x.view(b, -1, self.output_dim))


def _blocks(dim, resolution, depth, num_heads, window_size, drop_path):
    return nn.ModuleList(
        SwinTransformerBlock(dim, resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                             drop_path=drop_path[i])
        for i in range(depth))


class BasicLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, drop_path, downsample=None):
        super().__init__()
        self.blocks = _blocks(dim, input_resolution, depth, num_heads, window_size, drop_path)
        self.downsample = downsample(input_resolution, dim=dim) if downsample is not None else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class BasicLayer_up(nn.Module):  # noqa: N801  (the official name)
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, drop_path, upsample=None):
        super().__init__()
        self.blocks = _blocks(dim, input_resolution, depth, num_heads, window_size, drop_path)
        self.upsample = PatchExpand(input_resolution, dim=dim, dim_scale=2) if upsample is not None else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.upsample(x) if self.upsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patches_resolution = [img_size // patch_size, img_size // patch_size]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        assert tuple(x.shape[2:]) == self.img_size
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformerSys(nn.Module):
    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 2, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.1, ape=False):
        super().__init__()
        self.num_layers = len(depths)
        self.ape = ape
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        res = self.patches_resolution = self.patch_embed.patches_resolution
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        n = self.num_layers
        self.layers = nn.ModuleList(
            BasicLayer(int(embed_dim * 2 ** i), (res[0] // 2 ** i, res[1] // 2 ** i), depths[i], num_heads[i],
                       window_size, dpr[sum(depths[:i]):sum(depths[:i + 1])],
                       downsample=PatchMerging if i < n - 1 else None)
            for i in range(n))
        self.layers_up = nn.ModuleList()
        self.concat_back_dim = nn.ModuleList()
        for i in range(n):
            s = n - 1 - i
            dim, resolution = int(embed_dim * 2 ** s), (res[0] // 2 ** s, res[1] // 2 ** s)
            self.concat_back_dim.append(nn.Linear(2 * dim, dim) if i > 0 else nn.Identity())
            if i == 0:
                self.layers_up.append(PatchExpand(resolution, dim=dim, dim_scale=2))
            else:
                self.layers_up.append(BasicLayer_up(dim, resolution, depths[s], num_heads[s], window_size,
                                                    dpr[sum(depths[:s]):sum(depths[:s + 1])],
                                                    upsample=PatchExpand if i < n - 1 else None))
        self.norm = nn.LayerNorm(int(embed_dim * 2 ** (n - 1)))
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = FinalPatchExpand_X4((img_size // patch_size, img_size // patch_size), dim_scale=4, dim=embed_dim)
        self.output = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x_downsample = []
        for layer in self.layers:
            x_downsample.append(x)
            x = layer(x)
        x = self.norm(x)
        for inx, layer_up in enumerate(self.layers_up):
            if inx == 0:
                x = layer_up(x)
            else:
                x = torch.cat([x, x_downsample[3 - inx]], -1)
                x = self.concat_back_dim[inx](x)
                x = layer_up(x)
        x = self.norm_up(x)
        h, w = self.patches_resolution
        b = x.shape[0]
        x = self.up(x).view(b, 4 * h, 4 * w, -1).permute(0, 3, 1, 2)
        return self.output(x)


class OfficialSwinUnet(nn.Module):
    """``networks/vision_transformer.py SwinUnet``: the ``swin_unet.`` prefix and the grey-to-RGB repeat."""

    def __init__(self, num_classes=9, **kwargs):
        super().__init__()
        self.swin_unet = SwinTransformerSys(num_classes=num_classes, **kwargs)

    def forward(self, x):
        if x.size()[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.swin_unet(x)


def official_load_from(swin_unet: nn.Module, pretrained_dict: dict) -> dict:
    """``SwinUnet.load_from`` for an ImageNet checkpoint (``{'model': ...}``): returns the dict it loads."""
    model_dict = swin_unet.state_dict()
    full_dict = copy.deepcopy(pretrained_dict)
    for k, v in pretrained_dict.items():
        if "layers." in k:
            current_layer_num = 3 - int(k[7:8])
            current_k = "layers_up." + str(current_layer_num) + k[8:]
            full_dict.update({current_k: v})
    for k in list(full_dict.keys()):
        if k in model_dict and full_dict[k].shape != model_dict[k].shape:
            del full_dict[k]
    swin_unet.load_state_dict(full_dict, strict=False)
    return full_dict


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Norms off (1, 0), biases and bias tables large enough that a misplaced tensor changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith("relative_position_bias_table"):
                param.copy_(noise)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif name.endswith("absolute_pos_embed"):
                param.copy_(0.1 * noise)
