"""Swin-UMamba (Liu et al., MICCAI 2024): a VMamba-Tiny encoder behind a conv stem, UNETR's residual conv blocks on
every skip and a UNETR decoder, as JiarunLiu/Swin-UMamba's ``nets/SwinUMamba.py`` builds it.

Levels (resolution 1, 1/2, ..., 1/32 of the input), each an encoder stage of the U-Net:

- 0: the image itself; its skip is a residual block (in_channels -> ``stem_features``);
- 1: the stem, a stride-2 7x7 conv and an affine InstanceNorm without activation, fed by the image (not by level
  0's block); its skip: a residual block lifting ``stem_features`` to ``dims[0]``;
- 2 .. 1 + len(dims): VMamba's stages: a stride-2 patch embedding (then patch merging between stages) and
  ``depths[k]`` VSS blocks at ``dims[k]``; each skip a residual block lifting ``dims[k]`` to ``dims[k + 1]``, the
  deepest stage its own skip.

The decoder upsamples by a bias-free transposed conv, concatenates the skip and runs a residual block; at full
resolution a second residual block follows. Residual blocks are MONAI's ``UnetResBlock`` (bias-free convs,
InstanceNorm without affine parameters, LeakyReLU 0.01), as UNETR's. Deep supervision outputs the four
highest-resolution decoder stages (one per VMamba stage), not the deepest one, as the official network.

nnU-Net plans set only the input channels and classes: the official builder (``get_swin_umamba_from_plans``)
ignores the plan's features, strides and kernels, and so does this builder (it takes none of them).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetResBlock

from medmamba.networks.blocks.conv import conv_nd, instance_norm, transposed_conv_nd
from medmamba.networks.blocks.patch import ChannelsFirst, ChannelsLast, PatchEmbed, PatchMerging
from medmamba.networks.blocks.ssnd import VSSBlock
from medmamba.networks.blocks.stochastic_depth import drop_path_rates
from medmamba.networks.nets._token_unet import vssm_block_key
from medmamba.networks.nets._unet import RefinedSkip, SegUNet, UNetDecoder, normalize_strides, per_stage
from medmamba.registry import Paper, ReportedResult, register_model


def _res_block(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """UNETR's residual block: 3x3 convs, a 1x1 conv skip where the width changes."""
    return UnetResBlock(spatial_dims, in_channels, out_channels, kernel_size=3, stride=1, norm_name="instance")


def _vss_stage(spatial_dims: int, entry: nn.Module, dim: int, depth: int, rates, d_state: int,
               channels_last: bool) -> nn.Sequential:
    """Patch embedding or merging (``entry``) then ``depth`` VSS blocks; channels-first in and out."""
    layers = [("channels_last", ChannelsLast())] if channels_last else []
    layers += [("entry", entry),
               ("blocks", nn.Sequential(*[VSSBlock(dim, spatial_dims, d_state=d_state, drop_path=next(rates))
                                          for _ in range(depth)])),
               ("channels_first", ChannelsFirst())]
    return nn.Sequential(OrderedDict(layers))


def checkpoint_filter(state_dict, model: nn.Module):
    """Map an official SwinUMamba state dict (``nnUNetTrainerSwinUMamba*``'s ``network_weights``) to ours.

    ``encoder{m}`` (UNETR blocks on the skips) -> ``encoder[m - 1].refine``; ``stem`` -> ``encoder[1].body``;
    ``vssm_encoder.patch_embed`` / ``downsamples[k]`` / ``layers[k]`` -> the entries and blocks of
    ``encoder[2 + k]`` (merging ``k`` enters ``encoder[3 + k]``); ``decoder{m}`` -> ``decoder.ups[m - 2]`` and
    ``decoder.stages[m - 2]`` (``decoder2`` and ``decoder1`` are the two blocks of ``decoder.stages[0]``);
    ``out_layers[i]`` -> ``decoder.heads[i]``. Returns a ``medmamba.weights.Converted``.
    """
    from medmamba.weights import remap

    def rename(key: str):
        rules = [
            (r"stem\.0\.(.*)", r"encoder.1.body.conv.\1"),
            (r"stem\.1\.(.*)", r"encoder.1.body.norm.\1"),
            (r"vssm_encoder\.patch_embed\.(.*)", r"encoder.2.body.entry.\1"),
            (r"encoder(\d+)\.layer\.(.*)", lambda m: f"encoder.{int(m[1]) - 1}.refine.{m[2]}"),
            (r"decoder(\d+)\.transp_conv\.conv\.(.*)", lambda m: f"decoder.ups.{int(m[1]) - 2}.{m[2]}"),
            (r"decoder2\.conv_block\.(.*)", r"decoder.stages.0.0.\1"),
            (r"decoder1\.layer\.(.*)", r"decoder.stages.0.1.\1"),
            (r"decoder(\d+)\.conv_block\.(.*)", lambda m: f"decoder.stages.{int(m[1]) - 2}.{m[2]}"),
            (r"out_layers\.(\d+)\.conv\.conv\.(.*)", r"decoder.heads.\1.\2"),
        ]
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                return re.sub(pattern, repl, key), None
        m = re.fullmatch(r"vssm_encoder\.downsamples\.(\d+)\.(.*)", key)
        if m:
            return f"encoder.{int(m[1]) + 3}.body.entry.{m[2]}", None
        m = re.fullmatch(r"vssm_encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m and (rest := vssm_block_key(m[3])) is not None:
            return f"encoder.{int(m[1]) + 2}.body.blocks.{m[2]}.{rest}", None
        return None

    return remap(state_dict, rename)


@register_model(
    task="segmentation", spatial_dims=(2, 3), family="hybrid with CNN",
    scan="4-route cross-scan (2D) / 6-route cross-scan (3D)",
    paper=Paper("Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining", "MICCAI", 2024, "2402.03302"),
    code_url="https://github.com/JiarunLiu/Swin-UMamba",
    reported=(ReportedResult("AbdomenMRI, Endoscopy, Microscopy: mean gain over U-Mamba_Enc (abstract)",
                             "score points", 2.72),),
    paper_params_m=59.89,
    presets={"paper": {}, "tiny": dict(stem_features=8, dims=(8, 16, 32, 64), depths=1, d_state=4)},
    reference_input={2: (1, 224, 224), 3: (1, 128, 128, 128)},
    trainer="SwinUMambaTrainer", checkpoint_filter=checkpoint_filter,
    notes="The official network (nets/SwinUMamba.py, VMamba-Tiny encoder: 59.88M with 2 classes there and here). "
    "The builder's defaults are the paper's configuration, which nnU-Net plans do not change: as the official "
    "builder, only the channels and classes come from them. The paper starts from ImageNet-pretrained VMamba "
    "weights; nothing is downloaded here (random init, as the official Scratch trainers), but trained official "
    "checkpoints import (medmamba import-weights). The official code needs inputs divisible by 32; here they are "
    "padded. 3D is our extension (6 cross-scan routes, 3D convs); the paper is 2D. Swin-UMamba-D "
    "(nets/SwinUMambaD.py, a Mamba decoder) is not provided.",
)
def swin_umamba(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, stem_features: int = 48,
                dims: Sequence[int] = (96, 192, 384, 768), depths: int | Sequence[int] = (2, 2, 9, 2),
                d_state: int = 16, drop_path_rate: float = 0.2, deep_supervision: bool = False) -> SegUNet:
    """Swin-UMamba (see the module docstring); the defaults are the paper's network.

    Args:
        spatial_dims: 2 (the paper's) or 3.
        in_channels: input channels.
        out_channels: classes (segmentation heads).
        stem_features: the stem's width and the full-resolution skip's (48).
        dims: the VMamba stages' widths (VMamba-Tiny's 96, 192, 384, 768).
        depths: VSS blocks per VMamba stage (VMamba-Tiny's 2, 2, 9, 2).
        d_state: the selective scan's state size.
        drop_path_rate: stochastic depth rising linearly to this over the VSS blocks.
        deep_supervision: also return the outputs at 1/2 .. 1/2^(len(dims) - 1) of the input resolution.

    Returns:
        The network (``net.decoder.deep_supervision`` is nnU-Net's switch).
    """
    dims = list(dims)
    depths = per_stage(depths, len(dims), "depths")
    rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
    encoder: list[nn.Module] = [
        RefinedSkip(nn.Identity(), _res_block(spatial_dims, in_channels, stem_features)),
        RefinedSkip(nn.Sequential(OrderedDict(conv=conv_nd(spatial_dims, in_channels, stem_features, 7, 2),
                                              norm=instance_norm(spatial_dims, stem_features))),
                    _res_block(spatial_dims, stem_features, dims[0])),
    ]
    for k, dim in enumerate(dims):
        entry = PatchEmbed(spatial_dims, stem_features, dim, 2) if k == 0 else \
            PatchMerging(spatial_dims, dims[k - 1], dim, 2)
        body = _vss_stage(spatial_dims, entry, dim, depths[k], rates, d_state, channels_last=k > 0)
        last = k == len(dims) - 1
        encoder.append(RefinedSkip(body, nn.Identity() if last else _res_block(spatial_dims, dim, dims[k + 1])))
    features = [stem_features, *dims, dims[-1]]  # skip width per level
    n = len(features)
    stages = [_res_block(spatial_dims, 2 * features[i], features[i]) for i in range(n - 1)]
    stages[0] = nn.Sequential(stages[0], _res_block(spatial_dims, features[0], features[0]))
    decoder = UNetDecoder(
        ups=[transposed_conv_nd(spatial_dims, features[i + 1], features[i], 2, bias=False) for i in range(n - 1)],
        stages=stages,
        heads=[conv_nd(spatial_dims, f, out_channels, 1) for f in features[:len(dims)]],
        deep_supervision=deep_supervision,
    )
    return SegUNet(encoder, decoder, normalize_strides([1] + [2] * (n - 1), spatial_dims))
