"""SegMamba (Xing et al., MICCAI 2024) as ge-xing/SegMamba's ``model_segmamba/segmamba.py`` builds it.

Resolutions 0 (the input) .. n - 1, each an encoder stage of the U-Net:

- 0: the image itself; its skip is a UNETR residual block (``in_channels`` -> ``features[0]``);
- 1 .. n - 1: the Mamba encoder. Resolution 1 starts with a 7x7 conv stem of stride ``strides[1]`` on the image,
  the others with InstanceNorm and a conv whose kernel equals its stride; then a gated spatial convolution (GSC)
  and ``depths`` tri-orientated Mamba layers at ``encoder_features[i - 1]`` channels. The skip goes through
  InstanceNorm, a channel MLP (1x1 conv, GELU, 1x1 conv, hidden width twice the input) and a UNETR residual block
  lifting it to ``features[i]``; the deepest skip starts the decoder.

The decoder upsamples by a bias-free transposed conv, concatenates the skip and runs a UNETR residual block; at
full resolution a second residual block follows, then a 1x1 conv head. Residual blocks are MONAI's
``UnetResBlock`` (bias-free convs, InstanceNorm without affine parameters, LeakyReLU 0.01), as the official code.

The tri-orientated Mamba layer is LayerNorm, then one Mamba mixer over the voxels along three routes (forward,
reverse, and inter-slice: the first spatial axis innermost), each with its own conv1d and S6 parameters, the
three outputs summed (mamba_ssm's ``bimamba_type="v3"`` in SegMamba's fork), plus the residual.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetResBlock

from medmamba.networks.blocks.conv import conv_nd, transposed_conv_nd
from medmamba.networks.blocks.mamba import MambaLayer
from medmamba.networks.blocks.scan import Route
from medmamba.networks.nets._unet import RefinedSkip, SegUNet, UNetDecoder, normalize_strides, per_stage, seg_heads
from medmamba.registry import Paper, ReportedResult, register_model


def tri_orientated_routes(spatial_dims: int) -> list[Route]:
    """Forward and reverse over the row-major flattening, and the inter-slice route (the first axis innermost: at
    each in-slice position, across the slices). Their order is the official directions' (``""``, ``_b``, ``_s``).
    """
    axes = tuple(range(spatial_dims))
    return [Route(axes), Route(axes, True), Route(axes[1:] + axes[:1])]


def _instance_norm(spatial_dims: int, channels: int) -> nn.Module:
    """InstanceNorm without affine parameters (torch's and MONAI's default, as the official code)."""
    return (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims - 1](channels)


def _conv_norm_relu(spatial_dims: int, channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(conv_nd(spatial_dims, channels, channels, kernel_size), _instance_norm(spatial_dims, channels),
                         nn.ReLU())


class GatedSpatialConv(nn.Module):
    """SegMamba's gated spatial convolution (GSC) as the official code computes it:
    ``x + out(spatial(x) + pointwise(x))``, each part conv, InstanceNorm, ReLU; ``spatial`` two 3x3 convs,
    ``pointwise`` and ``out`` 1x1 convs. (The paper writes the two branches multiplied; its code adds them.)"""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.spatial = nn.Sequential(_conv_norm_relu(spatial_dims, channels, 3),
                                     _conv_norm_relu(spatial_dims, channels, 3))
        self.pointwise = _conv_norm_relu(spatial_dims, channels, 1)
        self.out = _conv_norm_relu(spatial_dims, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(self.spatial(x) + self.pointwise(x))


class ChannelMLP(nn.Module):
    """1x1 conv to ``2 * channels``, GELU, 1x1 conv back (the official ``MlpChannel``)."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.fc1 = conv_nd(spatial_dims, channels, 2 * channels, 1)
        self.act = nn.GELU()
        self.fc2 = conv_nd(spatial_dims, 2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _unetr_block(spatial_dims: int, in_channels: int, out_channels: int, kernel_size) -> nn.Module:
    """UNETR's residual block: two convs, a 1x1 conv skip where the width changes."""
    return UnetResBlock(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, stride=1,
                        norm_name="instance")


def _downsample(spatial_dims: int, in_channels: int, out_channels: int, stride, stem: bool) -> nn.Module:
    """The stem (a 7x7 conv of stride ``stride``, padding 3), or InstanceNorm and a conv with kernel = stride."""
    if stem:
        return conv_nd(spatial_dims, in_channels, out_channels, 7, stride)
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[spatial_dims - 1]
    return nn.Sequential(OrderedDict(norm=_instance_norm(spatial_dims, in_channels),
                                     conv=conv(in_channels, out_channels, stride, stride)))


# The official Mamba's three directions, in our routes' order, and how each of their tensors joins ours.
_DIRECTIONS = ("", "_b", "_s")
_DIRECTION_TENSORS = {  # official name ({} = the direction's suffix) -> ours, and how the three combine
    "conv1d{}.weight": ("conv1d.weight", torch.cat),
    "conv1d{}.bias": ("conv1d.bias", torch.cat),
    "x_proj{}.weight": ("ssm.x_proj_weight", torch.stack),
    "dt_proj{}.weight": ("ssm.dt_projs_weight", torch.stack),
    "dt_proj{}.bias": ("ssm.dt_projs_bias", torch.stack),
    "A{}_log": ("ssm.A_logs", torch.cat),
    "D{}": ("ssm.Ds", torch.cat),
}
_GSC = {"proj": "spatial.0.0", "proj2": "spatial.1.0", "proj3": "pointwise.0", "proj4": "out.0"}
_RULES = (  # official key -> ours (re.sub templates, first full match wins)
    (r"vit\.downsample_layers\.0\.0\.(weight|bias)", r"encoder.1.body.down.\1"),
    (r"vit\.downsample_layers\.(\d)\.1\.(weight|bias)", lambda m: f"encoder.{int(m[1]) + 1}.body.down.conv.{m[2]}"),
    (r"vit\.gscs\.(\d)\.(proj\d?)\.(weight|bias)",
     lambda m: f"encoder.{int(m[1]) + 1}.body.gsc.{_GSC[m[2]]}.{m[3]}"),
    (r"vit\.stages\.(\d)\.(\d+)\.norm\.(weight|bias)",
     lambda m: f"encoder.{int(m[1]) + 1}.body.layers.{m[2]}.norm.{m[3]}"),
    (r"vit\.stages\.(\d)\.(\d+)\.mamba\.(in_proj|out_proj)\.(weight|bias)",
     lambda m: f"encoder.{int(m[1]) + 1}.body.layers.{m[2]}.mixer.{m[3]}.{m[4]}"),
    (r"vit\.mlps\.(\d)\.(fc\d)\.(weight|bias)", lambda m: f"encoder.{int(m[1]) + 1}.refine.mlp.{m[2]}.{m[3]}"),
    (r"encoder1\.layer\.(.+)", r"encoder.0.refine.\1"),
    (r"encoder(\d)\.layer\.(.+)", lambda m: f"encoder.{int(m[1]) - 1}.refine.block.{m[2]}"),
    (r"decoder(\d)\.transp_conv\.conv\.weight", lambda m: f"decoder.ups.{int(m[1]) - 2}.weight"),
    (r"decoder2\.conv_block\.(.+)", r"decoder.stages.0.0.\1"),
    (r"decoder1\.layer\.(.+)", r"decoder.stages.0.1.\1"),
    (r"decoder(\d)\.conv_block\.(.+)", lambda m: f"decoder.stages.{int(m[1]) - 2}.{m[2]}"),
    (r"out\.conv\.conv\.(weight|bias)", r"decoder.heads.0.\1"),
)


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: SegUNet):
    """ge-xing/SegMamba's ``SegMamba`` state dict to ours: ``vit.*`` (the Mamba encoder: stem and downsampling
    convs, GSCs, Mamba layers, channel MLPs) -> ``encoder[i + 1]``; ``encoder{k}`` (UNETR blocks on the skips) ->
    ``encoder[k - 1].refine``; ``decoder{k}`` -> ``decoder.ups[k - 2]`` and ``decoder.stages[k - 2]``
    (``decoder2`` and ``decoder1`` are the two blocks of ``decoder.stages[0]``); ``out`` -> ``decoder.heads[0]``.
    Each Mamba's three directions (``conv1d``, ``conv1d_b``, ``conv1d_s``, ...) are stacked into our mixer's
    per-route tensors.

    Args:
        state_dict: the official tensors.
        model: ours (unused: the mapping depends on the names alone).

    Returns:
        Our state dict with its sources (``medmamba.weights.Converted``).
    """
    from medmamba.weights import Converted

    out = Converted()
    mambas = OrderedDict()
    for key, value in state_dict.items():
        for pattern, target in _RULES:
            if re.fullmatch(pattern, key):
                out.put(re.sub(pattern, target, key), value, key)
                break
        else:
            m = re.fullmatch(r"vit\.stages\.(\d)\.(\d+)\.mamba\.(.+)", key)
            if m:
                mambas.setdefault(f"encoder.{int(m[1]) + 1}.body.layers.{m[2]}.mixer", {})[m[3]] = key
    for ours, names in mambas.items():
        for template, (name, join) in _DIRECTION_TENSORS.items():
            theirs = [names.get(template.format(suffix)) for suffix in _DIRECTIONS]
            if all(theirs):
                out.put(f"{ours}.{name}", join([state_dict[k] for k in theirs]), *theirs)
    return out


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN",
    scan="tri-orientated (forward, reverse, inter-slice)",
    paper=Paper("SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation", "MICCAI", 2024,
                "2401.13560"),
    code_url="https://github.com/ge-xing/SegMamba",
    reported=(ReportedResult("BraTS2023 (WT)", "Dice", 93.61), ReportedResult("BraTS2023 (TC)", "Dice", 92.65),
              ReportedResult("BraTS2023 (ET)", "Dice", 87.71)),
    paper_params_m=67.42,
    params_source="official code",
    presets={
        # The official model (3_train.py): Mamba encoder of widths 48..384 at 1/2..1/16, two tri-orientated
        # Mamba layers per stage, skips lifted to 96..768, a 48-wide full-resolution skip from the input.
        "paper": dict(features=(48, 96, 192, 384, 768), strides=(1, 2, 2, 2, 2), depths=2),
        "tiny": dict(features=(8, 16, 32), strides=(1, 2, 2), depths=1, d_state=4),
    },
    reference_input={3: (4, 128, 128, 128), 2: (1, 256, 256)},
    trainer="SegMambaTrainer",
    checkpoint_filter=checkpoint_filter,
    notes="The official network (ge-xing/SegMamba model_segmamba/segmamba.py as 3_train.py builds it: 4 input "
    "channels, 4 classes, 128^3 crops) has 67.42M parameters, counted from its modules; the paper states none. "
    "The official GSC adds its two branches where the paper multiplies them; it is followed here. The official "
    "Mamba cuts each stage's sequence into a fixed 64, 32, 16, 8 slices, which are the first axis's slices at its "
    "128-deep inputs; here the inter-slice route runs along the first axis at any input size (the same at 128). "
    "nnU-Net plans set the stages' strides, widths (the Mamba encoder runs one stage behind: features[:-1]) and "
    "the residual blocks' kernels. The paper is 3D; in 2D the inter-slice route is the column-major scan.",
)
def segmamba(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
             features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
             encoder_features: Sequence[int] | None = None, kernel_sizes: Sequence | None = None,
             depths: int | Sequence[int] = 2, d_state: int = 16, deep_supervision: bool = False) -> SegUNet:
    """SegMamba (see the module docstring).

    Args:
        spatial_dims: 3 (the paper's) or 2.
        in_channels: input channels.
        out_channels: classes (segmentation heads).
        features: skip and decoder width per resolution, the input's first (the official 48, 96, 192, 384 and
            the hidden size 768).
        strides: per resolution; the first must be 1 (the full-resolution skip), the second is the stem's.
        encoder_features: the Mamba encoder's widths at resolutions 1 .. n - 1 (default ``features[:-1]``, the
            official ``feat_size``).
        kernel_sizes: the residual blocks' kernels per resolution (default 3).
        depths: tri-orientated Mamba layers per Mamba stage (an int, or one per resolution 1 .. n - 1).
        d_state: the selective scan's state size.
        deep_supervision: also return the outputs of the lower decoder stages (heads not in the official model).

    Returns:
        The network (``net.decoder.deep_supervision`` is nnU-Net's switch).
    """
    n = len(features)
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"segmamba: features has {n} stages but strides has {len(strides)}")
    if n < 2 or any(s != 1 for s in strides[0]):
        raise ValueError(f"segmamba: needs two stages or more and strides[0] = 1 (the full-resolution skip), got "
                         f"strides {strides}")
    enc = per_stage(features[:-1] if encoder_features is None else encoder_features, n - 1, "encoder_features")
    depths = per_stage(depths, n - 1, "depths")
    kernels = per_stage(3, n, "kernel_sizes") if kernel_sizes is None else list(kernel_sizes)
    routes = tri_orientated_routes(spatial_dims)
    encoder: list[nn.Module] = [RefinedSkip(nn.Identity(), _unetr_block(spatial_dims, in_channels, features[0],
                                                                          kernels[0]))]
    for i in range(1, n):
        width = enc[i - 1]
        body = nn.Sequential(OrderedDict(
            down=_downsample(spatial_dims, enc[i - 2] if i > 1 else in_channels, width, strides[i], stem=i == 1),
            gsc=GatedSpatialConv(spatial_dims, width),
            layers=nn.Sequential(*[MambaLayer(width, d_state=d_state, routes=routes, sum_directions=True)
                                   for _ in range(depths[i - 1])]),
        ))
        refine = nn.Sequential(OrderedDict(norm=_instance_norm(spatial_dims, width),
                                           mlp=ChannelMLP(spatial_dims, width),
                                           block=_unetr_block(spatial_dims, width, features[i], kernels[i])))
        encoder.append(RefinedSkip(body, refine))
    stages = [_unetr_block(spatial_dims, 2 * features[i], features[i], kernels[i]) for i in range(n - 1)]
    stages[0] = nn.Sequential(stages[0], _unetr_block(spatial_dims, features[0], features[0], kernels[0]))
    decoder = UNetDecoder(
        ups=[transposed_conv_nd(spatial_dims, features[i + 1], features[i], strides[i + 1], bias=False)
             for i in range(n - 1)],
        stages=stages,
        heads=seg_heads(spatial_dims, features if deep_supervision else features[:2], out_channels),
        deep_supervision=deep_supervision,
    )
    return SegUNet(encoder, decoder, strides)
