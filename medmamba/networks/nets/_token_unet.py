"""U-Net of channels-last token blocks (VSS, MHS, gated CNN) with patch merging / expanding and additive skips,
as VM-UNet; shared by ``vm_unet``, ``mhs_vm_unet`` and ``mambaout_unet`` so they differ only in the block."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn as nn

from medmamba.networks.blocks.conv import conv_stage
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchEmbed, PatchExpanding, PatchMerging
from medmamba.networks.nets._unet import (SegUNet, UNetDecoder, drop_path_rates, normalize_strides, per_stage,
                                          seg_heads)

BlockFactory = Callable[[int, float], nn.Module]  # (dim, drop_path) -> channels-last block


def _tokens(*modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(ChannelsLast(), *modules, ChannelsFirst())


def token_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    make_block: BlockFactory,
    features: Sequence[int],
    strides: Sequence,
    depths: int | Sequence[int],
    decoder_depths: int | Sequence[int],
    kernel_sizes: Sequence | None = None,
    drop_path_rate: float = 0.0,
    deep_supervision: bool = False,
) -> SegUNet:
    """Stage 0 is a patch embedding by ``strides[0]`` followed by token blocks, or, when ``strides[0]`` is 1
    (nnU-Net plans), a full-resolution residual conv stage (token mixing is costliest there); later stages merge
    patches by ``strides[i]`` then run ``depths[i]`` blocks. The decoder expands patches, adds the skip and runs
    ``decoder_depths[i]`` blocks; with a patch-embedding stem a final expansion restores the input resolution."""
    n = len(features)
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"features has {n} stages but strides has {len(strides)}")
    depths = per_stage(depths, n, "depths")
    decoder_depths = per_stage(decoder_depths, n - 1, "decoder_depths")
    kernel = kernel_sizes[0] if kernel_sizes is not None else 3
    conv_first = all(s == 1 for s in strides[0])
    token_counts = depths[1:] if conv_first else depths
    rates = iter(drop_path_rates(drop_path_rate, sum(token_counts)))

    def blocks(dim: int, count: int) -> list[nn.Module]:
        return [make_block(dim, next(rates)) for _ in range(count)]

    encoder: list[nn.Module] = []
    for i, (f, s) in enumerate(zip(features, strides)):
        if i == 0 and conv_first:
            encoder.append(conv_stage(spatial_dims, in_channels, f, depths[0], kernel))
        elif i == 0:
            encoder.append(nn.Sequential(PatchEmbed(spatial_dims, in_channels, f, s), *blocks(f, depths[0]),
                                         ChannelsFirst()))
        else:
            encoder.append(_tokens(PatchMerging(spatial_dims, features[i - 1], f, s), *blocks(f, depths[i])))
    rates = iter(drop_path_rates(drop_path_rate, sum(decoder_depths))[::-1])
    stages: list[nn.Module] = [nn.Identity()] * (n - 1)
    for i in reversed(range(n - 1)):
        if i == 0 and conv_first:
            stages[0] = conv_stage(spatial_dims, features[0], features[0], decoder_depths[0], kernel)
        else:
            stages[i] = _tokens(*blocks(features[i], decoder_depths[i]))
    decoder = UNetDecoder(
        ups=[_tokens(PatchExpanding(spatial_dims, features[i + 1], features[i], strides[i + 1])) for i in range(n - 1)],
        stages=stages,
        heads=seg_heads(spatial_dims, features, out_channels),
        fuse="add",
        final_up=None if conv_first else _tokens(PatchExpanding(spatial_dims, features[0], features[0], strides[0])),
        deep_supervision=deep_supervision,
    )
    return SegUNet(encoder, decoder, strides)
