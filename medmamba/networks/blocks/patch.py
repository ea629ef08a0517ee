"""Patch embedding, merging (downsampling) and expanding (upsampling) for any spatial dims and per-axis strides.

Merging/expanding work on channels-last tensors (B, *spatial, C); ``ChannelsLast``/``ChannelsFirst`` convert.
"""
from __future__ import annotations

from math import prod

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import Size, as_tuple, conv_nd


class ChannelsLast(nn.Module):
    """(B, C, *spatial) -> (B, *spatial, C), a view (no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(1, -1)


class ChannelsFirst(nn.Module):
    """(B, *spatial, C) -> (B, C, *spatial), a view (no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(-1, 1)


def space_to_depth(x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """(B, *S, C) -> (B, *S/stride, prod(stride) * C), a patch's positions with the first axis varying fastest:
    in 2D x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2], as Swin's and VMamba's patch merging."""
    b, *spatial, c = x.shape
    n = len(spatial)
    split = [v for size, s in zip(spatial, stride) for v in (size // s, s)]
    x = x.reshape(b, *split, c)
    x = x.permute(0, *range(1, 2 * n, 2), *range(2 * n, 1, -2), 2 * n + 1)
    return x.reshape(b, *(size // s for size, s in zip(spatial, stride)), prod(stride) * c)


def depth_to_space(x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """(B, *S, prod(stride) * C) -> (B, *S*stride, C)."""
    b, *spatial, c = x.shape
    n = len(spatial)
    c_out = c // prod(stride)
    x = x.reshape(b, *spatial, *stride, c_out)
    x = x.permute(0, *[v for i in range(n) for v in (1 + i, 1 + n + i)], 2 * n + 1)
    return x.reshape(b, *(size * s for size, s in zip(spatial, stride)), c_out)


class PatchEmbed(nn.Module):
    """Non-overlapping patches: channels-first image (B, C, *S) -> channels-last tokens (B, *S/stride, dim)."""

    def __init__(self, spatial_dims: int, in_channels: int, dim: int, stride: Size = 4):
        super().__init__()
        s = as_tuple(stride, spatial_dims)
        self.proj = conv_nd(spatial_dims, in_channels, dim, s, s)
        self.proj.padding = (0,) * spatial_dims
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1))


class PatchMerging(nn.Module):
    """Downsample channels-last tokens by per-axis ``stride``: gather each patch's channels, norm, project."""

    def __init__(self, spatial_dims: int, in_dim: int, out_dim: int, stride: Size = 2):
        super().__init__()
        self.stride = as_tuple(stride, spatial_dims)
        self.norm = nn.LayerNorm(prod(self.stride) * in_dim)
        self.reduction = nn.Linear(prod(self.stride) * in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(space_to_depth(x, self.stride)))


class PatchExpanding(nn.Module):
    """Upsample channels-last tokens by per-axis ``stride``: project to every sub-position's channels, then norm."""

    def __init__(self, spatial_dims: int, in_dim: int, out_dim: int, stride: Size = 2):
        super().__init__()
        self.stride = as_tuple(stride, spatial_dims)
        self.expand = nn.Linear(in_dim, prod(self.stride) * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(depth_to_space(self.expand(x), self.stride))
