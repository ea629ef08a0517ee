"""nnU-Net-style conv U-Net (strided conv stages, transposed-conv upsampling, concatenated skips) with optional
extra modules after encoder stages: where U-Mamba and SegMamba put their Mamba layers."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from medmamba.networks.blocks.conv import ResConvBlock, conv_stage, transposed_conv_nd
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchMerging
from medmamba.networks.nets._unet import RefinedSkip, SegUNet, UNetDecoder, normalize_strides, per_stage, seg_heads


def conv_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    strides: Sequence,
    kernel_sizes: Sequence | None,
    n_conv_per_stage: int | Sequence[int],
    n_conv_per_stage_decoder: int | Sequence[int],
    encoder_extras: Sequence[nn.Module | None],
    residual_encoder: bool = True,
    deep_supervision: bool = False,
    encoder_features: Sequence[int] | None = None,
    residual_decoder: bool = False,
    merge_patches: bool = False,
) -> SegUNet:
    """``encoder_features`` (default ``features``) are the widths the encoder stages compute at; where one
    differs from ``features[i]`` a residual conv block lifts the stage's skip to ``features[i]`` (UNETR's
    encoder blocks, as SegMamba). ``encoder_extras[i]`` runs after stage ``i`` at ``encoder_features[i]``.
    ``merge_patches``: stages after the first downsample by patch merging (a linear map of each ``strides[i]``
    patch, as SegMamba's kernel-equals-stride conv) instead of a strided conv stage."""
    n = len(features)
    enc = per_stage(features if encoder_features is None else encoder_features, n, "encoder_features")
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"features has {n} stages but strides has {len(strides)}")
    kernels = per_stage(3, n, "kernel_sizes") if kernel_sizes is None else list(kernel_sizes)
    n_enc = per_stage(n_conv_per_stage, n, "n_conv_per_stage")
    n_dec = per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
    encoder = []
    for i in range(n):
        if merge_patches and i:
            stage = [ChannelsLast(), PatchMerging(spatial_dims, enc[i - 1], enc[i], strides[i]), ChannelsFirst()]
        else:
            stage = [conv_stage(spatial_dims, enc[i - 1] if i else in_channels, enc[i], n_enc[i], kernels[i],
                                strides[i], residual_encoder)]
        if encoder_extras[i] is not None:
            stage.append(encoder_extras[i])
        body = nn.Sequential(*stage)
        encoder.append(body if enc[i] == features[i]
                       else RefinedSkip(body, ResConvBlock(spatial_dims, enc[i], features[i], kernels[i])))
    decoder = conv_decoder(spatial_dims, out_channels, features, strides, kernels, n_dec, residual_decoder,
                           deep_supervision)
    return SegUNet(encoder, decoder, strides)


def conv_decoder(spatial_dims: int, out_channels: int, features: Sequence[int], strides: Sequence[Sequence[int]],
                 kernels: Sequence, n_conv: Sequence[int], residual: bool, deep_supervision: bool) -> UNetDecoder:
    """Transposed-conv upsampling, concatenated skip, ``n_conv[i]`` conv blocks per stage (nnU-Net / UNETR)."""
    n = len(features)
    return UNetDecoder(
        ups=[transposed_conv_nd(spatial_dims, features[i + 1], features[i], strides[i + 1]) for i in range(n - 1)],
        stages=[conv_stage(spatial_dims, 2 * features[i], features[i], n_conv[i], kernels[i], residual=residual)
                for i in range(n - 1)],
        heads=seg_heads(spatial_dims, features, out_channels),
        fuse="cat",
        deep_supervision=deep_supervision,
    )
