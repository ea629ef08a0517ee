"""Convolution blocks for any spatial dims (nnU-Net conventions: InstanceNorm, LeakyReLU, 'same' padding)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

Size = int | Sequence[int]


def as_tuple(value: Size, spatial_dims: int) -> tuple[int, ...]:
    t = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values, got {value!r}")
    return t


def conv_nd(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3, stride: Size = 1,
            groups: int = 1, bias: bool = True) -> nn.Module:
    """ConvNd with 'same' padding for odd kernels."""
    k = as_tuple(kernel_size, spatial_dims)
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
    return conv(in_channels, out_channels, k, as_tuple(stride, spatial_dims), tuple(i // 2 for i in k),
                groups=groups, bias=bias)


def transposed_conv_nd(spatial_dims: int, in_channels: int, out_channels: int, stride: Size,
                       bias: bool = True) -> nn.Module:
    """Learned upsampling by ``stride`` (kernel = stride), as nnU-Net's decoder (UNETR's has no bias)."""
    conv = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[spatial_dims - 1]
    s = as_tuple(stride, spatial_dims)
    return conv(in_channels, out_channels, s, s, bias=bias)


def instance_norm(spatial_dims: int, channels: int) -> nn.Module:
    return (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims - 1](channels, eps=1e-5, affine=True)


class ConvNormAct(nn.Sequential):
    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3,
                 stride: Size = 1, act: bool = True):
        layers = [conv_nd(spatial_dims, in_channels, out_channels, kernel_size, stride),
                  instance_norm(spatial_dims, out_channels)]
        if act:
            layers.append(nn.LeakyReLU(0.01, inplace=True))
        super().__init__(*layers)


class ResConvBlock(nn.Module):
    """Two ConvNormAct with a residual connection.

    The skip is the identity, or a strided 1x1 ConvNorm where the shape changes (MONAI's UnetResBlock);
    ``conv_skip=True`` makes it a strided 1x1 conv with bias and no norm whatever the shape (U-Mamba's
    BasicResBlock).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3,
                 stride: Size = 1, conv_skip: bool = False):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, act=False)
        strided = any(s != 1 for s in as_tuple(stride, spatial_dims))
        if conv_skip:
            self.skip = conv_nd(spatial_dims, in_channels, out_channels, 1, stride)
        elif strided or in_channels != out_channels:
            self.skip = ConvNormAct(spatial_dims, in_channels, out_channels, 1, stride, act=False)
        else:
            self.skip = nn.Identity()
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


def conv_stage(spatial_dims: int, in_channels: int, out_channels: int, num_blocks: int, kernel_size: Size = 3,
               stride: Size = 1, residual: bool = True) -> nn.Sequential:
    """``num_blocks`` conv blocks, the first one strided (nnU-Net's encoder stage)."""
    block = ResConvBlock if residual else ConvNormAct
    return nn.Sequential(*[
        block(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size, stride if i == 0 else 1)
        for i in range(max(1, num_blocks))
    ])

