"""Convolutions for any spatial dims on MONAI's layer factories, nnU-Net-style residual stages (MONAI's
``UnetResBlock``), and U-Mamba's residual block."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetResBlock
from monai.networks.layers.factories import Conv, Norm

Size = int | Sequence[int]
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})  # nnU-Net's nonlinearity
INSTANCE_NORM = ("instance", {"affine": True})  # nnU-Net's norm


def as_tuple(value: Size, spatial_dims: int) -> tuple[int, ...]:
    """An int repeated ``spatial_dims`` times, or a sequence as a tuple of ints (ValueError on a wrong length)."""
    t = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != spatial_dims:
        raise ValueError(f"expected {spatial_dims} values, got {value!r}")
    return t


def conv_nd(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3, stride: Size = 1,
            groups: int = 1, bias: bool = True) -> nn.Module:
    """ConvNd with 'same' padding for odd kernels."""
    k = as_tuple(kernel_size, spatial_dims)
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, k, as_tuple(stride, spatial_dims),
                                         tuple(i // 2 for i in k), groups=groups, bias=bias)


def transposed_conv_nd(spatial_dims: int, in_channels: int, out_channels: int, stride: Size,
                       bias: bool = True) -> nn.Module:
    """Learned upsampling by ``stride`` (kernel = stride), as nnU-Net's decoder (UNETR's has no bias)."""
    s = as_tuple(stride, spatial_dims)
    return Conv[Conv.CONVTRANS, spatial_dims](in_channels, out_channels, s, s, bias=bias)


def instance_norm(spatial_dims: int, channels: int) -> nn.Module:
    """Affine InstanceNorm (nnU-Net's)."""
    return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)


def conv_stage(spatial_dims: int, in_channels: int, out_channels: int, num_blocks: int, kernel_size: Size = 3,
               stride: Size = 1) -> nn.Sequential:
    """``num_blocks`` residual conv blocks (MONAI's ``UnetResBlock`` with nnU-Net's InstanceNorm and LeakyReLU),
    the first one strided: nnU-Net's residual encoder stage."""
    return nn.Sequential(*[
        UnetResBlock(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                     stride if i == 0 else 1, norm_name=INSTANCE_NORM, act_name=LEAKY_RELU)
        for i in range(max(1, num_blocks))
    ])


class ConvNormAct(nn.Sequential):
    """Conv (with bias), InstanceNorm, optionally LeakyReLU: nnU-Net's ``ConvDropoutNormReLU`` without dropout."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3,
                 stride: Size = 1, act: bool = True):
        layers = [conv_nd(spatial_dims, in_channels, out_channels, kernel_size, stride),
                  instance_norm(spatial_dims, out_channels)]
        if act:
            layers.append(nn.LeakyReLU(0.01, inplace=True))
        super().__init__(*layers)


class BasicResBlock(nn.Module):
    """U-Mamba's residual block: ConvNormAct, ConvNorm, plus the skip (identity, or with ``conv_skip`` a strided
    1x1 conv with bias and no norm), then LeakyReLU. Unlike MONAI's ``UnetResBlock`` its convs have biases and a
    shape-changing skip is a plain conv."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Size = 3,
                 stride: Size = 1, conv_skip: bool = False):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, act=False)
        self.skip = conv_nd(spatial_dims, in_channels, out_channels, 1, stride) if conv_skip else nn.Identity()
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))
