"""Swin-UMamba: conv stem stages at high resolution, VSS (SS2D) stages below, UNETR-style residual conv decoder."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from medmamba.networks.blocks.conv import ResConvBlock, conv_stage
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchMerging
from medmamba.networks.blocks.ssnd import VSSBlock
from medmamba.networks.nets._conv_unet import conv_decoder
from medmamba.networks.nets._unet import RefinedSkip, SegUNet, drop_path_rates, normalize_strides, per_stage
from medmamba.registry import Paper, ReportedResult, register_model


@register_model(
    task="segmentation", spatial_dims=(2, 3), family="hybrid with CNN",
    scan="4-route cross-scan (2D) / 6-route cross-scan (3D)",
    paper=Paper("Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining", "MICCAI", 2024, "2402.03302"),
    code_url="https://github.com/JiarunLiu/Swin-UMamba",
    reported=(ReportedResult("AbdomenMRI, Endoscopy, Microscopy: mean gain over U-Mamba_Enc (abstract)",
                             "score points", 2.72),),
    paper_params_m=59.89,
    presets={
        # VMamba-Tiny encoder (stem at 1/2, VSS stages [2, 2, 9, 2] of 96..768 channels at 1/4..1/32); residual
        # blocks lift each skip to the next stage's width (48 -> 96, ..., 384 -> 768) for a UNETR-style decoder.
        "paper": dict(features=(48, 96, 192, 384, 768, 768), encoder_features=(48, 48, 96, 192, 384, 768),
                      strides=(1, 2, 2, 2, 2, 2), conv_stages=2, depths=(1, 1, 2, 2, 9, 2),
                      n_conv_per_stage_decoder=(2, 1, 1, 1, 1), drop_path_rate=0.2),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), conv_stages=1, depths=1, d_state=4),
    },
    reference_input={2: (1, 224, 224), 3: (1, 128, 128, 128)},
    trainer=None,
    notes="The paper is 2D and loads ImageNet-pretrained VMamba weights; nothing is downloaded here (random init). "
    "The 3D variant scans 6 routes. Multi-resolution: conv stages at full and half resolution, SSM below.",
)
def swin_umamba(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
                encoder_features: Sequence[int] | None = None,
                kernel_sizes: Sequence | None = None, conv_stages: int = 2, depths: int | Sequence[int] = 1,
                n_conv_per_stage_decoder: int | Sequence[int] = 1, d_state: int = 16, drop_path_rate: float = 0.0,
                deep_supervision: bool = False):
    n = len(features)
    if not 1 <= conv_stages < n:
        raise ValueError(f"conv_stages must be in 1..{n - 1}, not {conv_stages}")
    strides = normalize_strides(strides, spatial_dims)
    kernels = per_stage(3, n, "kernel_sizes") if kernel_sizes is None else list(kernel_sizes)
    depths = per_stage(depths, n, "depths")
    enc = per_stage(features if encoder_features is None else encoder_features, n, "encoder_features")
    if enc[-1] != features[-1]:
        raise ValueError("the last stage feeds the decoder directly: encoder_features[-1] must equal features[-1]")
    rates = iter(drop_path_rates(drop_path_rate, sum(depths[conv_stages:])))
    encoder: list[nn.Module] = []
    for i, f in enumerate(enc):
        prev = enc[i - 1] if i else in_channels
        if i < conv_stages:
            body = conv_stage(spatial_dims, prev, f, depths[i], kernels[i], strides[i])
        else:
            blocks = [VSSBlock(f, spatial_dims, d_state=d_state, drop_path=next(rates)) for _ in range(depths[i])]
            body = nn.Sequential(ChannelsLast(), PatchMerging(spatial_dims, prev, f, strides[i]), *blocks,
                                 ChannelsFirst())
        refine_skip = i < n - 1 and (i >= conv_stages or f != features[i])
        encoder.append(RefinedSkip(body, ResConvBlock(spatial_dims, f, features[i], kernels[i])) if refine_skip
                       else body)
    decoder = conv_decoder(spatial_dims, out_channels, features, strides, kernels,
                           per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder"), True,
                           deep_supervision)
    return SegUNet(encoder, decoder, strides)
