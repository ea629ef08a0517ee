"""U-Mamba (Ma et al. 2024): a residual conv U-Net from nnU-Net plans with Mamba layers at the bottleneck (Bot) or
after the encoder stages (Enc), as bowang-lab/U-Mamba's UMambaBot_2d/3d.py and UMambaEnc_2d/3d.py build it.

What the official networks do beyond nnU-Net's plans, all reproduced here:

- a stem (the stage-0 blocks once more, at the input) before encoder stage 0;
- every stage's first block has a 1x1-conv skip (bias, no norm), the others an identity skip;
- block counts: the plan's in the first ``ceil(n / 2)`` encoder stages, 1 in the others; the decoder keeps the
  plan's counts in its deepest stages and uses 1 from decoder stage ``ceil((n - 1) / 2 + 0.5)`` (counted from
  the bottom) on;
- upsampling by nearest-neighbour interpolation then a 1x1 conv;
- the Mamba layer is LayerNorm then Mamba, its output replacing the feature map (no residual); in U-Mamba_Enc a
  stage whose feature map (at the planned patch size) has no more voxels than channels scans its channels as
  tokens (the model dimension is then the voxel count);
- 3D: Enc has a Mamba layer after every encoder stage; 2D: after every other stage, always including the last,
  and the 2D decoder's full-resolution stage has no skip.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.networks.blocks.conv import BasicResBlock, as_tuple, conv_nd
from medmamba.networks.blocks.mamba import MAMBA_SSM_NAMES, MambaMixer
from medmamba.networks.nets._unet import SegUNet, UNetDecoder, normalize_strides, per_stage, seg_heads
from medmamba.registry import Paper, ReportedResult, register_model

PAPER = Paper("U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation", "arXiv", 2024,
              "2401.04722")
CODE = "https://github.com/bowang-lab/U-Mamba"
TINY = dict(features=(8, 16, 32), strides=(1, 2, 2), n_conv_per_stage=1, n_conv_per_stage_decoder=1, d_state=4)
# nnU-Net's 3d_fullres plan for a 128^3 patch (the reference input: the paper's abdomen CT task); U-Mamba
# self-configures like nnU-Net and states no fixed size.
NNUNET_3D = dict(features=(32, 64, 128, 256, 320, 320), strides=(1, 2, 2, 2, 2, 2), n_conv_per_stage=2,
                 n_conv_per_stage_decoder=2)
NOTES = ("Self-configuring like nnU-Net: the paper states no parameter count. Built from nnU-Net plans as the "
         "official UMambaBot_3d.py / UMambaEnc_3d.py (and their 2D files) build theirs; the 'paper' preset is "
         "nnU-Net's 3d_fullres plan for a 128^3 patch, counted from its modules in the official code "
         "(bowang-lab/U-Mamba 28459e3, 2 classes): Bot 42.12M, Enc 42.75M.")


class NearestUpConv(nn.Module):
    """Upsampling by ``scale`` with nearest-neighbour interpolation, then a 1x1 conv (U-Mamba's UpsampleLayer)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]):
        super().__init__()
        self.scale = tuple(float(s) for s in as_tuple(scale, spatial_dims))
        self.conv = conv_nd(spatial_dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class UMambaLayer(nn.Module):
    """LayerNorm then Mamba over the tokens of a channels-first map (B, C, *spatial); returns the Mamba output
    (no residual). Tokens are the voxels (``dim`` = C) or, with ``channel_tokens``, the channels (``dim`` = the
    voxel count). Runs in float32 under autocast, as the official layer."""

    def __init__(self, dim: int, channel_tokens: bool = False, d_state: int = 16):
        super().__init__()
        self.channel_tokens = channel_tokens
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, d_state=d_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._mamba(x.float())
        return self._mamba(x.float())

    def _mamba(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2)  # (B, C, voxels)
        if self.channel_tokens:
            return self.mixer(self.norm(tokens)).reshape(x.shape)
        return self.mixer(self.norm(tokens.transpose(1, 2))).transpose(1, 2).reshape(x.shape)


def residual_stage(spatial_dims: int, in_channels: int, out_channels: int, num_blocks: int, kernel_size,
                   stride=1) -> nn.Sequential:
    """A first block with a 1x1-conv skip (strided), then ``num_blocks - 1`` identity-skip blocks."""
    return nn.Sequential(
        BasicResBlock(spatial_dims, in_channels, out_channels, kernel_size, stride, conv_skip=True),
        *[BasicResBlock(spatial_dims, out_channels, out_channels, kernel_size) for _ in range(num_blocks - 1)],
    )


def umamba_block_counts(n_conv_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int]):
    """The official networks' block counts from the plan's: 1 in the deeper half of the encoder and the shallower
    decoder stages. Decoder counts are indexed as nnU-Net's (0 = deepest decoder stage)."""
    enc, dec = list(n_conv_per_stage), list(n_conv_per_stage_decoder)
    n = len(enc)
    for s in range(math.ceil(n / 2), n):
        enc[s] = 1
    for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):
        dec[s] = 1
    return enc, dec


def _feature_map_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    sizes, size = [], tuple(patch_size)
    for stride in strides:
        size = tuple(p // s for p, s in zip(size, stride))
        sizes.append(size)
    return sizes


def _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
            n_conv_per_stage_decoder, mamba_layers, deep_supervision) -> SegUNet:
    n = len(features)
    strides = normalize_strides(strides, spatial_dims)
    if len(strides) != n:
        raise ValueError(f"features has {n} stages but strides has {len(strides)}")
    kernels = per_stage(3, n, "kernel_sizes") if kernel_sizes is None else list(kernel_sizes)
    n_enc, n_dec = umamba_block_counts(per_stage(n_conv_per_stage, n, "n_conv_per_stage"),
                                       per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder"))
    encoder = []
    for i in range(n):
        parts = OrderedDict()
        if i == 0:
            parts["stem"] = residual_stage(spatial_dims, in_channels, features[0], n_enc[0], kernels[0])
        parts["blocks"] = residual_stage(spatial_dims, features[max(i - 1, 0)], features[i], n_enc[i], kernels[i],
                                         strides[i])
        if mamba_layers[i] is not None:
            parts["mamba"] = mamba_layers[i]
        encoder.append(nn.Sequential(parts))
    # nnU-Net's decoder stage j (0 = deepest) is our stage n - 2 - j (indexed by resolution).
    unfused = {0} if spatial_dims == 2 else set()
    decoder = UNetDecoder(
        ups=[NearestUpConv(spatial_dims, features[i + 1], features[i], strides[i + 1]) for i in range(n - 1)],
        stages=[residual_stage(spatial_dims, features[i] * (1 if i in unfused else 2), features[i],
                               n_dec[n - 2 - i], kernels[i]) for i in range(n - 1)],
        heads=seg_heads(spatial_dims, features, out_channels),
        deep_supervision=deep_supervision,
        unfused=unfused,
    )
    return SegUNet(encoder, decoder, strides)


# Official block modules -> ours: BasicResBlock (conv1, norm1, conv2, norm2, conv3) and dynamic_network_architectures'
# BasicBlockD (conv1.conv, conv1.norm, ..., each also registered as conv1.all_modules.<i>: one tensor, two names).
_BLOCK_MODULES = {"conv1": "conv1.0", "norm1": "conv1.1", "conv2": "conv2.0", "norm2": "conv2.1", "conv3": "skip",
                  **{f"conv{i}.{name}": f"conv{i}.{j}" for i in (1, 2)
                     for name, j in (("conv", 0), ("all_modules.0", 0), ("norm", 1), ("all_modules.1", 1))}}


def _block(prefix: str, rest: str):
    module, _, param = rest.rpartition(".")
    return (f"{prefix}.{_BLOCK_MODULES[module]}.{param}", None) if module in _BLOCK_MODULES else None


def _mamba(prefix: str, rest: str):
    if rest.startswith("norm."):
        return f"{prefix}.{rest}", None
    module, _, name = rest.partition(".")
    if module == "mamba" and name in MAMBA_SSM_NAMES:
        ours, transform = MAMBA_SSM_NAMES[name]
        return f"{prefix}.mixer.{ours}", transform
    return None


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: SegUNet):
    """bowang-lab/U-Mamba's UMambaBot / UMambaEnc state dict (2D or 3D, as nnU-Net saves ``network_weights``) to
    ours. The decoder's copy of the encoder (``decoder.encoder.*``) holds the same tensors as ``encoder.*``.

    Args:
        state_dict: the official tensors.
        model: ours (its stage count maps the official decoder's deepest-first indices to ours).

    Returns:
        Our state dict with its sources.
    """
    from medmamba.weights import remap

    last = len(model.encoder) - 1

    def by_resolution(j: str) -> int:  # the official decoder counts stages from the bottom
        return last - 1 - int(j)

    rules = (
        (r"(?:decoder\.)?encoder\.stem\.(\d+)\.(.+)", lambda b, rest: _block(f"encoder.0.stem.{b}", rest)),
        (r"(?:decoder\.)?encoder\.stages\.(\d+)\.(\d+)\.(.+)",
         lambda s, b, rest: _block(f"encoder.{s}.blocks.{b}", rest)),
        (r"(?:decoder\.)?encoder\.mamba_layers\.(\d+)\.(.+)", lambda s, rest: _mamba(f"encoder.{s}.mamba", rest)),
        (r"mamba_layer\.(.+)", lambda rest: _mamba(f"encoder.{last}.mamba", rest)),
        (r"decoder\.upsample_layers\.(\d+)\.conv\.(weight|bias)",
         lambda j, param: (f"decoder.ups.{by_resolution(j)}.conv.{param}", None)),
        (r"decoder\.stages\.(\d+)\.(\d+)\.(.+)",
         lambda j, b, rest: _block(f"decoder.stages.{by_resolution(j)}.{b}", rest)),
        (r"decoder\.seg_layers\.(\d+)\.(weight|bias)",
         lambda j, param: (f"decoder.heads.{by_resolution(j)}.{param}", None)),
    )

    def rename(key: str):
        for pattern, target in rules:
            m = re.fullmatch(pattern, key)
            if m is not None:
                return target(*m.groups())
        return None

    return remap(state_dict, rename)


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN", scan="unidirectional (flattened voxels)",
    paper=PAPER, code_url=CODE,
    reported=(ReportedResult("Abdomen CT (FLARE22 organs)", "DSC", 86.83),),
    paper_params_m=42.12, params_source="official code",
    presets={"paper": NNUNET_3D, "tiny": TINY},
    reference_input={3: (1, 128, 128, 128), 2: (1, 512, 512)},
    trainer="UMambaBotTrainer", notes=NOTES, checkpoint_filter=checkpoint_filter,
)
def umamba_bot(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
               features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
               kernel_sizes: Sequence | None = None, n_conv_per_stage: int | Sequence[int] = 2,
               n_conv_per_stage_decoder: int | Sequence[int] = 2, d_state: int = 16,
               deep_supervision: bool = False) -> SegUNet:
    """U-Mamba_Bot: one Mamba layer on the bottleneck's voxels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (segmentation heads).
        features: channels per stage (nnU-Net's ``features_per_stage``).
        strides: per-stage downsampling, the first usually 1 (nnU-Net's ``strides``).
        kernel_sizes: per-stage conv kernels (default 3).
        n_conv_per_stage: the plan's encoder blocks per stage (the deeper half gets 1, as the official code).
        n_conv_per_stage_decoder: the plan's decoder blocks per stage, deepest first (likewise trimmed).
        d_state: Mamba's state size.
        deep_supervision: return the outputs of every decoder stage, highest resolution first.

    Returns:
        The network (``net.decoder.deep_supervision`` is nnU-Net's switch).
    """
    mamba = [None] * (len(features) - 1) + [UMambaLayer(features[-1], d_state=d_state)]
    return _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                   n_conv_per_stage_decoder, mamba, deep_supervision)


@register_model(
    task="segmentation", spatial_dims=(3, 2), family="hybrid with CNN", scan="unidirectional (flattened voxels)",
    paper=PAPER, code_url=CODE,
    reported=(ReportedResult("Abdomen CT (FLARE22 organs)", "DSC", 86.38),),
    paper_params_m=42.75, params_source="official code",
    presets={"paper": dict(NNUNET_3D, planned_patch_size=128), "tiny": TINY},
    reference_input={3: (1, 128, 128, 128), 2: (1, 512, 512)},
    trainer="UMambaEncTrainer", checkpoint_filter=checkpoint_filter,
    notes=NOTES + " Mamba after every encoder stage in 3D, full resolution included (costly on a CPU); in 2D "
    "after every other stage. With channel tokens a net runs at its planned patch size only, as the official one.",
)
def umamba_enc(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
               features: Sequence[int] = (16, 32, 64, 128), strides: Sequence = (1, 2, 2, 2),
               kernel_sizes: Sequence | None = None, n_conv_per_stage: int | Sequence[int] = 2,
               n_conv_per_stage_decoder: int | Sequence[int] = 2,
               planned_patch_size: int | Sequence[int] | None = None, d_state: int = 16,
               deep_supervision: bool = False) -> SegUNet:
    """U-Mamba_Enc: a Mamba layer after encoder stages (every stage in 3D, every other one ending at the last in
    2D).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes (segmentation heads).
        features: channels per stage (nnU-Net's ``features_per_stage``).
        strides: per-stage downsampling, the first usually 1 (nnU-Net's ``strides``).
        kernel_sizes: per-stage conv kernels (default 3).
        n_conv_per_stage: the plan's encoder blocks per stage (the deeper half gets 1, as the official code).
        n_conv_per_stage_decoder: the plan's decoder blocks per stage, deepest first (likewise trimmed).
        planned_patch_size: nnU-Net's patch size (an int: the same edge in every dim). A stage whose feature map
            has no more voxels than channels then scans its channels as tokens, as the official code; None: voxels
            everywhere.
        d_state: Mamba's state size.
        deep_supervision: return the outputs of every decoder stage, highest resolution first.

    Returns:
        The network (``net.decoder.deep_supervision`` is nnU-Net's switch).
    """
    n = len(features)
    with_mamba = range(n) if spatial_dims == 3 else [s for s in range(n) if (s % 2 == 1) != (n % 2 == 1)]
    sizes = (None if planned_patch_size is None else
             _feature_map_sizes(as_tuple(planned_patch_size, spatial_dims), normalize_strides(strides, spatial_dims)))
    mamba = [None] * n
    for s in with_mamba:
        voxels = None if sizes is None else math.prod(sizes[s])
        channel_tokens = voxels is not None and voxels <= features[s]
        mamba[s] = UMambaLayer(voxels if channel_tokens else features[s], channel_tokens, d_state=d_state)
    return _umamba(spatial_dims, in_channels, out_channels, features, strides, kernel_sizes, n_conv_per_stage,
                   n_conv_per_stage_decoder, mamba, deep_supervision)
