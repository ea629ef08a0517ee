"""LightM-UNet: depthwise-conv stem, residual vision Mamba (RVM) layers with max-pool downsampling, a light decoder
(depthwise-separable conv, upsampling, additive skips)."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from medmamba.networks.blocks.conv import DepthwiseSeparableConv, as_tuple, conv_nd, instance_norm
from medmamba.networks.blocks.mamba import ResidualVisionMambaLayer
from medmamba.networks.nets._unet import SegUNet, UNetDecoder, normalize_strides, per_stage, seg_heads
from medmamba.registry import Paper, ReportedResult, register_model


def _rvm_stage(spatial_dims: int, in_dim: int, out_dim: int, depth: int, d_state: int) -> list[nn.Module]:
    """``depth`` RVM layers, the first projecting ``in_dim`` to ``out_dim`` (a 1x1 conv when depth is 0)."""
    if depth == 0:
        return [] if in_dim == out_dim else [conv_nd(spatial_dims, in_dim, out_dim, 1)]
    return [ResidualVisionMambaLayer(in_dim if j == 0 else out_dim, out_dim, d_state=d_state) for j in range(depth)]


@register_model(
    task="segmentation", spatial_dims=(2, 3), family="U-Net variant", scan="unidirectional (flattened voxels)",
    paper=Paper("LightM-UNet: Mamba Assists in Lightweight UNet for Medical Image Segmentation", "arXiv", 2024,
                "2403.05246"),
    code_url="https://github.com/MrBlankness/LightM-UNet",
    reported=(ReportedResult("LiTS and Montgomery&Shenzhen, vs nnU-Net (abstract)", "fewer parameters (x)", 116.0),),
    presets={
        "paper": dict(features=(32, 64, 128, 256), strides=(1, 2, 2, 2), depths=(1, 2, 2, 4)),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=(0, 1, 1), d_state=4),
    },
    reference_input={2: (1, 512, 512), 3: (1, 128, 128, 128)},
    trainer="LightMUNetTrainer",
    notes="Stage 0 runs RVM layers at full resolution as in the paper; the default (depth 0 there) skips that "
    "costly scan. The paper's bottleneck RVM layers are the last stage's. No parameter count is checked: the "
    "paper's table could not be read here (its README says ~1M), and the official trainer's configuration "
    "(init_filters 32, blocks_down (1, 2, 2, 4) of two-RVM residual blocks after a downsampling RVM layer, "
    "blocks_up (1, 1, 1)) builds 5.0M parameters (counted from MrBlankness/LightM-UNet nets/LightMUNet.py), "
    "which does not agree with ~1M. The 'paper' preset follows the paper's text: 1, 2, 2, 4 RVM layers per stage "
    "at 32..256 channels.",
)
def lightm_unet(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
                depths: int | Sequence[int] | None = None, d_state: int = 16, deep_supervision: bool = False):
    """``depths`` RVM layers per stage; by default none at full resolution and one per lower stage."""
    n = len(features)
    depths = [0] + [1] * (n - 1) if depths is None else depths
    strides = normalize_strides(strides, spatial_dims)
    depths = per_stage(depths, n, "depths")
    pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 1]
    encoder = [nn.Sequential(DepthwiseSeparableConv(spatial_dims, in_channels, features[0]),
                             *_rvm_stage(spatial_dims, features[0], features[0], depths[0], d_state))]
    for i in range(1, n):
        encoder.append(nn.Sequential(pool(strides[i], strides[i]),
                                     *_rvm_stage(spatial_dims, features[i - 1], features[i], depths[i], d_state)))
    ups = [
        nn.Sequential(DepthwiseSeparableConv(spatial_dims, features[i + 1], features[i]),
                      instance_norm(spatial_dims, features[i]), nn.ReLU(inplace=True),
                      nn.Upsample(scale_factor=as_tuple(strides[i + 1], spatial_dims), mode="nearest"))
        for i in range(n - 1)
    ]
    stages = [DepthwiseSeparableConv(spatial_dims, f, f) for f in features[:-1]]
    decoder = UNetDecoder(ups, stages, seg_heads(spatial_dims, features, out_channels), fuse="add",
                          deep_supervision=deep_supervision)
    return SegUNet(encoder, decoder, strides)
