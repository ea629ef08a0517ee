"""MedMamba's SS-Conv-SSM block: half the channels through a conv branch, half through SS2D/SS3D, then shuffle."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.layers import DropPath

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.ssnd import SSND


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups of a channels-last tensor (B, *spatial, C) (ShuffleNet)."""
    *lead, c = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    return x.reshape(*lead, groups, c // groups).transpose(-1, -2).reshape(*lead, c)


def _batch_norm(spatial_dims: int, channels: int) -> nn.Module:
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[spatial_dims - 1](channels)


class SSConvSSM(nn.Module):
    """SS-Conv-SSM on channels-last input (B, *spatial, dim).

    The channels are split in two halves: the first goes through BN-Conv3-BN-ReLU-Conv3-BN-ReLU-Conv1-ReLU
    (local features), the second through LayerNorm -> SSND (cross-scan selective scan, long-range); the
    halves are concatenated, channel-shuffled with 2 groups so the next block mixes them, and added to the input.
    """

    def __init__(self, dim: int, spatial_dims: int, d_state: int = 16, drop_path: float = 0.0, **ssnd_kwargs):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SSConvSSM needs an even dim, got {dim}")
        half = dim // 2
        self.norm = nn.LayerNorm(half)
        ssnd_kwargs.setdefault("dt_rank", math.ceil(half / 16))  # Mamba/VMamba: dt_rank from the model dim
        self.ssm = SSND(half, spatial_dims, d_state=d_state, **ssnd_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.conv_branch = nn.Sequential(
            _batch_norm(spatial_dims, half),
            conv_nd(spatial_dims, half, half, 3),
            _batch_norm(spatial_dims, half),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, half, half, 3),
            _batch_norm(spatial_dims, half),
            nn.ReLU(inplace=True),
            conv_nd(spatial_dims, half, half, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local, global_ = x.chunk(2, dim=-1)
        local = self.conv_branch(local.movedim(-1, 1)).movedim(1, -1)
        global_ = self.drop_path(self.ssm(self.norm(global_)))
        return channel_shuffle(torch.cat([local, global_], dim=-1), 2) + x
