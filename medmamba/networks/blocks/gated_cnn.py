"""MambaOut's gated CNN block: the Mamba block without its state space model."""
from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers import DropPath

from medmamba.networks.blocks.conv import conv_nd


class GatedCNNBlock(nn.Module):
    """Channels-last (B, *spatial, dim): ``x + fc2(GELU(g) * [i, dwconv(c)])`` with g, i, c from fc1(norm(x))."""

    def __init__(self, dim: int, spatial_dims: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7,
                 conv_ratio: float = 1.0, drop_path: float = 0.0):
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        self.split = (hidden, hidden - conv_channels, conv_channels)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.act = nn.GELU()
        self.conv = conv_nd(spatial_dims, conv_channels, conv_channels, kernel_size, groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, i, c = self.fc1(self.norm(x)).split(self.split, dim=-1)
        c = self.conv(c.movedim(-1, 1)).movedim(1, -1)
        return x + self.drop_path(self.fc2(self.act(g) * torch.cat((i, c), dim=-1)))
