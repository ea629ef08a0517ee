"""MambaIR's residual state-space block (RSSB) and group (RSSG), for any spatial dims, channels-last."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.ssnd import SSND


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation on a channels-first map (RCAN): global average pool -> bottleneck -> sigmoid gate."""

    def __init__(self, spatial_dims: int, channels: int, squeeze_factor: int = 30):
        super().__init__()
        hidden = max(1, channels // squeeze_factor)
        self.gate = nn.Sequential(
            conv_nd(spatial_dims, channels, hidden, 1),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=tuple(range(2, x.dim())), keepdim=True))


class ChannelAttentionBlock(nn.Module):
    """MambaIR's CAB on channels-first maps: Conv3 (squeeze channels) -> GELU -> Conv3 -> channel attention."""

    def __init__(self, spatial_dims: int, channels: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        hidden = max(1, channels // compress_ratio)
        self.body = nn.Sequential(
            conv_nd(spatial_dims, channels, hidden, 3),
            nn.GELU(),
            conv_nd(spatial_dims, hidden, channels, 3),
            ChannelAttention(spatial_dims, channels, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class RSSBlock(nn.Module):
    """Residual state-space block on channels-last input (B, *spatial, dim)::

        x = s1 * x + SSND(LN(x))          # global mixing, learnable per-channel skip scale s1
        x = s2 * x + CAB(LN(x))           # local enhancement + channel attention
    """

    def __init__(self, dim: int, spatial_dims: int, d_state: int = 16, expand: float = 2.0,
                 compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.ssm = SSND(dim, spatial_dims, d_state=d_state, expand=expand, dt_rank=math.ceil(dim / 16))
        self.skip_scale1 = nn.Parameter(torch.ones(dim))
        self.norm2 = nn.LayerNorm(dim)
        self.cab = ChannelAttentionBlock(spatial_dims, dim, compress_ratio, squeeze_factor)
        self.skip_scale2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.skip_scale1 + self.ssm(self.norm1(x))
        return x * self.skip_scale2 + self.cab(self.norm2(x).movedim(-1, 1)).movedim(1, -1)


class RSSGroup(nn.Module):
    """Residual state-space group: ``depth`` RSSBs, a 3x3 conv, and a residual connection around them."""

    def __init__(self, dim: int, spatial_dims: int, depth: int, **block_kwargs):
        super().__init__()
        self.blocks = nn.Sequential(*[RSSBlock(dim, spatial_dims, **block_kwargs) for _ in range(depth)])
        self.conv = conv_nd(spatial_dims, dim, dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x).movedim(-1, 1)).movedim(1, -1)
