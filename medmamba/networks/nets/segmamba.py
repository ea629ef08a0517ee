"""SegMamba: gated spatial convolution + tri-orientated Mamba (forward, reverse, inter-slice) encoder, CNN decoder."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from medmamba.networks.blocks.conv import GatedSpatialConv
from medmamba.networks.blocks.mamba import MambaLayer
from medmamba.networks.blocks.scan import Route, default_routes
from medmamba.networks.nets._conv_unet import conv_unet
from medmamba.networks.nets._unet import per_stage
from medmamba.registry import Paper, ReportedResult, register_model


def tri_orientated_routes(spatial_dims: int) -> list[Route]:
    """Forward and reverse over the row-major flattening, and the inter-slice route (first axis innermost)."""
    routes = default_routes(spatial_dims)
    forward = routes[0]
    inter_slice = next(r for r in routes if r.order[-1] == 0 and not r.reverse)
    return [forward, Route(forward.order, True), inter_slice]


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN",
    scan="tri-orientated (forward, reverse, inter-slice)",
    paper=Paper("SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation", "MICCAI", 2024,
                "2401.13560"),
    code_url="https://github.com/ge-xing/SegMamba",
    reported=(ReportedResult("BraTS2023 (WT)", "Dice", 93.61), ReportedResult("BraTS2023 (TC)", "Dice", 92.65),
              ReportedResult("BraTS2023 (ET)", "Dice", 87.71)),
    paper_params_m=67.4,
    params_source="official code",
    presets={
        # The official model: Mamba encoder of widths 48..384 at 1/2..1/16 (GSC + 2 tri-orientated Mamba layers
        # per stage), UNETR skips lifting them to 96..768 (a full-resolution block from the input gives the 48 one),
        # UNETR residual up-blocks, an extra residual block at full resolution.
        "paper": dict(features=(48, 96, 192, 384, 768), encoder_features=(48, 48, 96, 192, 384),
                      strides=(1, 2, 2, 2, 2), depths=(0, 2, 2, 2, 2), n_conv_per_stage=1,
                      n_conv_per_stage_decoder=(2, 1, 1, 1), residual_decoder=True, merge_patches=True),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), n_conv_per_stage=1, d_state=4),
    },
    reference_input={3: (4, 128, 128, 128), 2: (1, 256, 256)},
    trainer="SegMambaTrainer",
    notes="The paper states no parameter count; the official code's default (4 input channels, widths 48..384, "
    "hidden 768) builds 67.4M parameters (counted from its modules, ge-xing/SegMamba model_segmamba/segmamba.py). "
    "The 'paper' preset follows it but leaves out the channel MLP on each skip, and merges patches with "
    "LayerNorm + linear where the official uses InstanceNorm + a kernel-2 conv (7x7x7 conv stem). The paper is 3D; "
    "in 2D the inter-slice route is the column-major scan.",
)
def segmamba(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
             features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
             encoder_features: Sequence[int] | None = None, kernel_sizes: Sequence | None = None,
             depths: int | Sequence[int] = 1, n_conv_per_stage: int | Sequence[int] = 1,
             n_conv_per_stage_decoder: int | Sequence[int] = 1, residual_decoder: bool = False,
             merge_patches: bool = False, mamba_from_stage: int = 1, d_state: int = 16,
             deep_supervision: bool = False):
    """``encoder_features`` (default ``features``): widths of the Mamba encoder, whose skips residual conv
    blocks lift to ``features`` (UNETR-style, as the official model); ``merge_patches``: downsample by patch
    merging (the official kernel-equals-stride conv) rather than nnU-Net's strided conv stages."""
    depths = per_stage(depths, len(features), "depths")
    enc = per_stage(features if encoder_features is None else encoder_features, len(features), "encoder_features")
    routes = tri_orientated_routes(spatial_dims)
    extras = [
        nn.Sequential(GatedSpatialConv(spatial_dims, f),
                      *[MambaLayer(f, d_state=d_state, routes=routes) for _ in range(depths[i])])
        if i >= mamba_from_stage else None
        for i, f in enumerate(enc)
    ]
    return conv_unet(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                     n_conv_per_stage_decoder, extras, residual_encoder=True, deep_supervision=deep_supervision,
                     encoder_features=enc, residual_decoder=residual_decoder,
                     merge_patches=merge_patches)
