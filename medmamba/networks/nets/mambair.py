"""MambaIR (Guo et al., ECCV 2024, arXiv 2402.15648): image restoration with residual state-space groups;
image in, image out (denoising, deblurring, undersampled-MRI reconstruction), 2D and 3D.

conv -> LayerNorm -> RSSG x N -> LayerNorm -> conv (+ shallow features) -> conv -> + input (global residual:
the net learns the correction, not the image): csguoh/MambaIR's ``MambaIR`` with ``upscale=1`` and no upsampler,
its denoising and JPEG-artifact-removal model.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.rss import RSSGroup
from medmamba.registry import Paper, ReportedResult, register_model

# DIV2K's RGB mean, which the official code subtracts from 3-channel images (and adds back).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MambaIR(nn.Module):
    """MambaIR's restoration network (same-size output).

    Args:
        spatial_dims: 2 or 3 (3D is our extension: six scan routes, Conv3d channel-attention blocks).
        in_channels: image channels (also the output's).
        out_channels: must equal ``in_channels`` when given.
        embed_dim: feature width.
        depths: RSSBs per residual state-space group.
        d_state: the S6 state size.
        mlp_ratio: the SS2D expansion (its inner width over ``embed_dim``).
        compress_ratio: the channel-attention block's channel squeeze.
        squeeze_factor: the channel attention's bottleneck squeeze.
        rgb_mean_shift: subtract DIV2K's RGB mean from a 3-channel input and add it back to the output, as the
            official code does with 3 channels (it shifts no other channel count, nor does this).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        embed_dim: int = 64,
        depths: Sequence[int] = (4, 4, 4, 4),
        d_state: int = 16,
        mlp_ratio: float = 2.0,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        rgb_mean_shift: bool = False,
    ):
        super().__init__()
        if out_channels is not None and out_channels != in_channels:
            raise ValueError(f"MambaIR learns a residual on its input: out_channels ({out_channels}) must equal "
                             f"in_channels ({in_channels})")
        shift = DIV2K_RGB_MEAN if rgb_mean_shift and in_channels == 3 else (0.0,) * in_channels
        self.register_buffer("input_mean", torch.tensor(shift).view(1, -1, *(1,) * spatial_dims), persistent=False)
        self.conv_first = conv_nd(spatial_dims, in_channels, embed_dim, 3)
        self.embed_norm = nn.LayerNorm(embed_dim)
        block_kwargs = dict(d_state=d_state, expand=mlp_ratio, compress_ratio=compress_ratio,
                            squeeze_factor=squeeze_factor)
        self.groups = nn.Sequential(*[RSSGroup(embed_dim, spatial_dims, depth, **block_kwargs) for depth in depths])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = conv_nd(spatial_dims, embed_dim, embed_dim, 3)
        self.conv_last = conv_nd(spatial_dims, embed_dim, in_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.input_mean
        shallow = self.conv_first(x)
        deep = self.norm(self.groups(self.embed_norm(shallow.movedim(1, -1)))).movedim(-1, 1)
        return x + self.conv_last(self.conv_after_body(deep) + shallow) + self.input_mean


# csguoh/MambaIR (basicsr/archs/mambair_arch.py) -> ours, inside one RSSB (official VSSBlock); first match wins.
_BLOCK_RULES = [
    (r"ln_1\.", "norm1."),
    (r"ln_2\.", "norm2."),
    (r"skip_scale$", "skip_scale1"),
    (r"skip_scale2$", "skip_scale2"),
    (r"self_attention\.conv2d\.", "ssm.conv."),
    (r"self_attention\.(x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds)$", r"ssm.ssm.\1"),
    (r"self_attention\.(in_proj|out_norm|out_proj)\.", r"ssm.\1."),
    (r"conv_blk\.cab\.([02])\.", r"cab.body.\1."),
    (r"conv_blk\.cab\.3\.attention\.1\.", "cab.body.3.gate.0."),
    (r"conv_blk\.cab\.3\.attention\.3\.", "cab.body.3.gate.2."),
]
_TOP_RULES = [
    (r"(conv_first|norm|conv_after_body|conv_last)\.", r"\1."),
    (r"patch_embed\.norm\.", "embed_norm."),
    (r"layers\.(\d+)\.conv\.", r"groups.\1.conv."),
]


def checkpoint_filter(state_dict, model: nn.Module):
    """Map a csguoh/MambaIR ``MambaIR`` state dict (``upscale=1``, no upsampler) to ours.

    ``layers[g].residual_group.blocks[b]`` -> ``groups[g].blocks[b]`` (``ln_1`` / ``self_attention`` /
    ``skip_scale`` -> ``norm1`` / ``ssm`` / ``skip_scale1``, ``ln_2`` / ``conv_blk`` / ``skip_scale2`` ->
    ``norm2`` / ``cab`` / ``skip_scale2``), ``layers[g].conv`` -> ``groups[g].conv``, ``patch_embed.norm`` ->
    ``embed_norm``. A super-resolution model's upsampler is reported unused. Returns a
    ``medmamba.weights.Converted``.
    """
    from medmamba.weights import remap

    def rename(key: str):
        m = re.fullmatch(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.(.+)", key)
        rules, prefix, rest = (_BLOCK_RULES, f"groups.{m[1]}.blocks.{m[2]}.", m[3]) if m else (_TOP_RULES, "", key)
        for pattern, repl in rules:
            if re.match(pattern, rest):
                return prefix + re.sub(pattern, repl, rest, count=1), None
        return None

    return remap(state_dict, rename)


@register_model(
    task="restoration",
    spatial_dims=(2, 3),
    family="hybrid with CNN",
    scan="4-route cross-scan (2D) / 6-route (3D)",
    paper=Paper(
        title="MambaIR: A Simple Baseline for Image Restoration with State-Space Model",
        venue="ECCV",
        year=2024,
        arxiv="2402.15648",
    ),
    code_url="https://github.com/csguoh/MambaIR",
    # README of csguoh/MambaIR: the colour Gaussian-denoising models (options/*/mambair/*_ColorDN_level*.yml).
    reported=(
        ReportedResult("Urban100, colour Gaussian denoising sigma 15", "PSNR dB", 35.17),
        ReportedResult("Urban100, colour Gaussian denoising sigma 25", "PSNR dB", 32.99),
        ReportedResult("Urban100, colour Gaussian denoising sigma 50", "PSNR dB", 30.07),
    ),
    paper_params_m=15.78,
    params_source="official code",
    presets={
        "paper": {"embed_dim": 180, "depths": (6,) * 6, "mlp_ratio": 1.2, "rgb_mean_shift": True},
        "tiny": {"embed_dim": 16, "depths": (1, 1), "d_state": 4},
    },
    reference_input={2: (3, 64, 64), 3: (1, 32, 32, 32)},
    notes="The paper's image-to-image model: csguoh/MambaIR's MambaIR with upscale 1 and no upsampler, as its "
    "colour Gaussian denoising (ColorDN, 3 channels) and JPEG artifact removal (CAR, 1 channel) configurations "
    "(embed 180, 6 RSSGs of 6 RSSBs, mlp_ratio 1.2, img_range 1; 3-channel input shifted by DIV2K's RGB mean); "
    "imports their checkpoints. The paper states no parameter count for it: 15.78M with 3 channels, counted from "
    "its modules in the official code (csguoh/MambaIR 33d7b34). Its super-resolution models (pixel-shuffle "
    "upsampler, mlp_ratio 2) are not this entry. out_channels must equal in_channels. 3D is our extension "
    "(SS3D with 6 routes, Conv3d channel-attention block).",
    checkpoint_filter=checkpoint_filter,
)
def mambair(spatial_dims: int = 2, in_channels: int = 1, out_channels: int | None = None, **kwargs) -> MambaIR:
    """MambaIR restoration net with global residual learning."""
    return MambaIR(spatial_dims, in_channels, out_channels, **kwargs)
