"""LightM-UNet (Liao et al. 2024) as MrBlankness/LightM-UNet's ``nets/LightMUNet.py`` builds it for its nnU-Net
trainer (``nnUNetTrainerLightMUNet``: ``init_filters`` 32, ``blocks_down`` (1, 2, 2, 4), ``blocks_up`` (1, 1, 1)).

Encoder stage 0 is a bias-free depthwise-separable 3x3 conv (the stem) to ``features[0]``, then ``depths[0]``
residual Mamba blocks; stage ``i > 0`` is an RVM layer projecting ``features[i - 1]`` to ``features[i]`` at the
previous resolution, max pooling by ``strides[i]``, then ``depths[i]`` residual Mamba blocks. A residual Mamba block
is GroupNorm, ReLU, RVM layer, GroupNorm, ReLU, RVM layer, plus its input; an RVM layer is a Mamba mixer over the
voxels (one forward scan) with a scaled residual and a linear projection (``ResidualVisionMambaLayer``).

The decoder maps the deeper features by a bias-free 1x1 conv, upsamples them linearly (``align_corners=False``),
adds the skip and runs residual up blocks (GroupNorm, ReLU, a depthwise-separable 3x3 conv plus the scaled input,
GroupNorm, ReLU). The head is GroupNorm, ReLU and a depthwise-separable 1x1 conv with biases. GroupNorms have 8
groups (fewer where a width is not a multiple of 8).
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.mamba import MAMBA_SSM_NAMES, ResidualVisionMambaLayer
from medmamba.networks.nets._unet import SegUNet, UNetDecoder, normalize_strides, per_stage
from medmamba.registry import Paper, ReportedResult, register_model


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def depthwise_separable_conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                             bias: bool = False) -> nn.Sequential:
    """A depthwise conv then a pointwise one (LightM-UNet's ``get_dwconv_layer``)."""
    return nn.Sequential(conv_nd(spatial_dims, in_channels, in_channels, kernel_size, groups=in_channels, bias=bias),
                         conv_nd(spatial_dims, in_channels, out_channels, 1, bias=bias))


class ResidualMambaBlock(nn.Module):
    """GroupNorm, ReLU, RVM layer, twice, plus the input (the official ``ResMambaBlock``)."""

    def __init__(self, channels: int, d_state: int = 16):
        super().__init__()
        self.norm1, self.norm2 = _group_norm(channels), _group_norm(channels)
        self.rvm1 = ResidualVisionMambaLayer(channels, d_state=d_state)
        self.rvm2 = ResidualVisionMambaLayer(channels, d_state=d_state)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rvm1(self.act(self.norm1(x)))
        return self.rvm2(self.act(self.norm2(y))) + x


class ResidualUpBlock(nn.Module):
    """GroupNorm, ReLU, a depthwise-separable 3x3 conv plus the scaled input, GroupNorm, ReLU (the official
    ``ResUpBlock``)."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.norm1, self.norm2 = _group_norm(channels), _group_norm(channels)
        self.conv = depthwise_separable_conv(spatial_dims, channels, channels)
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(self.norm1(x))) + self.skip_scale * x
        return self.act(self.norm2(y))


def _head(spatial_dims: int, channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(_group_norm(channels), nn.ReLU(),
                         depthwise_separable_conv(spatial_dims, channels, out_channels, 1, bias=True))


def _rvm_key(prefix: str, rest: str):
    """An official ``MambaLayer``'s tensor -> ours (``ResidualVisionMambaLayer``)."""
    module, _, name = rest.partition(".")
    if module == "mamba":
        if name not in MAMBA_SSM_NAMES:
            return None
        ours, transform = MAMBA_SSM_NAMES[name]
        return f"{prefix}.mixer.{ours}", transform
    return f"{prefix}.{rest}", None


def _block_key(prefix: str, rest: str):
    """An official ``ResMambaBlock``'s tensor -> ours (``ResidualMambaBlock``)."""
    m = re.fullmatch(r"conv([12])\.(.+)", rest)
    return _rvm_key(f"{prefix}.rvm{m[1]}", m[2]) if m else (f"{prefix}.{rest}", None)


def _up_block_key(prefix: str, rest: str):
    """An official ``ResUpBlock``'s tensor -> ours (``ResidualUpBlock``): ``conv.<i>.conv.weight`` ->
    ``conv.<i>.weight``."""
    return prefix + "." + re.sub(r"^conv\.(\d)\.conv\.", r"conv.\1.", rest), None


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: SegUNet):
    """MrBlankness/LightM-UNet's ``LightMUNet`` state dict (as its nnU-Net fork saves ``network_weights``) to ours:
    ``convInit`` -> ``encoder[0].stem``; ``down_layers[i]``: its downsampling Mamba layer -> ``encoder[i].rvm``, its
    ``ResMambaBlock`` j -> ``encoder[i].blocks[j - 1]``; ``up_samples[j]`` / ``up_layers[j]`` (deepest first) ->
    ``decoder.ups`` / ``decoder.stages`` (highest resolution first); ``conv_final`` -> ``decoder.heads[0]``.

    Args:
        state_dict: the official tensors.
        model: ours (its stage count orders the decoder's stages).

    Returns:
        Our state dict with its sources (``medmamba.weights.Converted``).
    """
    from medmamba.weights import remap

    last = len(model.encoder) - 1
    rules = (
        (r"convInit\.(\d)\.conv\.weight", lambda i: (f"encoder.0.stem.{i}.weight", None)),
        (r"down_layers\.(\d+)\.0\.0\.(.+)", lambda i, rest: _rvm_key(f"encoder.{i}.rvm", rest)),
        (r"down_layers\.(\d+)\.(\d+)\.(.+)",
         lambda i, j, rest: _block_key(f"encoder.{i}.blocks.{int(j) - 1}", rest) if int(j) else None),
        (r"up_samples\.(\d+)\.0\.conv\.weight", lambda j: (f"decoder.ups.{last - 1 - int(j)}.0.weight", None)),
        (r"up_layers\.(\d+)\.(\d+)\.(.+)",
         lambda j, b, rest: _up_block_key(f"decoder.stages.{last - 1 - int(j)}.{b}", rest)),
        (r"conv_final\.0\.(weight|bias)", lambda param: (f"decoder.heads.0.0.{param}", None)),
        (r"conv_final\.2\.(\d)\.conv\.(weight|bias)", lambda i, param: (f"decoder.heads.0.2.{i}.{param}", None)),
    )

    def rename(key: str):
        for pattern, target in rules:
            m = re.fullmatch(pattern, key)
            if m is not None:
                return target(*m.groups())
        return None

    return remap(state_dict, rename)


@register_model(
    task="segmentation", spatial_dims=(2, 3), family="U-Net variant", scan="unidirectional (flattened voxels)",
    paper=Paper("LightM-UNet: Mamba Assists in Lightweight UNet for Medical Image Segmentation", "arXiv", 2024,
                "2403.05246"),
    code_url="https://github.com/MrBlankness/LightM-UNet",
    reported=(ReportedResult("LiTS and Montgomery&Shenzhen, vs nnU-Net (abstract)", "fewer parameters (x)", 116.0),),
    paper_params_m=5.01,
    params_source="official code",
    presets={
        "paper": {},  # the builder's defaults: the official trainer's network
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=1, decoder_depths=1, d_state=4),
    },
    reference_input={2: (1, 512, 512), 3: (1, 128, 128, 128)},
    trainer="LightMUNetTrainer",
    checkpoint_filter=checkpoint_filter,
    notes="The official network as its nnU-Net trainer builds it (nets/LightMUNet.py, nnUNetTrainerLightMUNet): "
    "5.01M parameters in 2D (1 input channel, 2 classes), counted from its modules. The paper states 1.09M for "
    "2D, which the released code does not build (MrBlankness/LightM-UNet issue 30). As the official trainer, "
    "LightMUNetTrainer builds this network whatever the plan's stages (only the dimensionality, channels and "
    "classes come from nnU-Net) and trains without deep supervision. Inputs need not be divisible by 8 here "
    "(they are padded); the official code needs it.",
)
def lightm_unet(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                features: Sequence[int] = (32, 64, 128, 256), strides: Sequence = (1, 2, 2, 2),
                depths: int | Sequence[int] | None = None, decoder_depths: int | Sequence[int] = 1,
                d_state: int = 16, deep_supervision: bool = False) -> SegUNet:
    """LightM-UNet (see the module docstring); the defaults are the official network.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (segmentation heads).
        features: width per stage (the official ``init_filters * 2**i``).
        strides: max-pooling per stage; the first must be 1.
        depths: residual Mamba blocks per encoder stage (the official ``blocks_down``); by default 1 at full
            resolution, 4 at the bottleneck and 2 between (the official (1, 2, 2, 4) for four stages).
        decoder_depths: residual up blocks per decoder stage, deepest first (the official ``blocks_up``).
        d_state: the selective scan's state size.
        deep_supervision: also return the outputs of the lower decoder stages (heads not in the official model).

    Returns:
        The network (``net.decoder.deep_supervision`` is nnU-Net's switch).
    """
    n = len(features)
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"lightm_unet: features has {n} stages but strides has {len(strides)}")
    if n < 2 or any(s != 1 for s in strides[0]):
        raise ValueError(f"lightm_unet: needs two stages or more and strides[0] = 1, got strides {strides}")
    depths = per_stage([1] + [2] * (n - 2) + [4] if depths is None else depths, n, "depths")
    decoder_depths = per_stage(decoder_depths, n - 1, "decoder_depths")
    pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 1]
    linear = ("linear", "bilinear", "trilinear")[spatial_dims - 1]

    def blocks(i: int) -> nn.Sequential:
        return nn.Sequential(*[ResidualMambaBlock(features[i], d_state) for _ in range(depths[i])])

    encoder = [nn.Sequential(OrderedDict(stem=depthwise_separable_conv(spatial_dims, in_channels, features[0]),
                                         blocks=blocks(0)))]
    for i in range(1, n):
        encoder.append(nn.Sequential(OrderedDict(
            rvm=ResidualVisionMambaLayer(features[i - 1], features[i], d_state=d_state),
            pool=pool(strides[i], strides[i]),
            blocks=blocks(i),
        )))
    decoder = UNetDecoder(
        ups=[nn.Sequential(conv_nd(spatial_dims, features[i + 1], features[i], 1, bias=False),
                           nn.Upsample(scale_factor=tuple(float(s) for s in strides[i + 1]), mode=linear,
                                       align_corners=False))
             for i in range(n - 1)],
        stages=[nn.Sequential(*[ResidualUpBlock(spatial_dims, features[i]) for _ in range(decoder_depths[n - 2 - i])])
                for i in range(n - 1)],
        heads=[_head(spatial_dims, f, out_channels) for f in features[:n - 1 if deep_supervision else 1]],
        fuse="add",
        deep_supervision=deep_supervision,
    )
    return SegUNet(encoder, decoder, strides)
