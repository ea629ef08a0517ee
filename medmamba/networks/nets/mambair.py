"""MambaIR (Guo et al., ECCV 2024, arXiv 2402.15648): image restoration with residual state-space groups;
image in, image out (denoising, deblurring, undersampled-MRI reconstruction), 2D and 3D.

conv -> LayerNorm -> RSSG x N -> LayerNorm -> conv (+ shallow features) -> conv -> + input (global residual:
the net learns the correction, not the image).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.rss import RSSGroup
from medmamba.registry import Paper, ReportedResult, register_model


class MambaIR(nn.Module):
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
        squeeze_factor: int = 16,
    ):
        super().__init__()
        if out_channels is not None and out_channels != in_channels:
            raise ValueError(f"MambaIR learns a residual on its input: out_channels ({out_channels}) must equal "
                             f"in_channels ({in_channels})")
        self.conv_first = conv_nd(spatial_dims, in_channels, embed_dim, 3)
        self.embed_norm = nn.LayerNorm(embed_dim)
        block_kwargs = dict(d_state=d_state, expand=mlp_ratio, compress_ratio=compress_ratio,
                            squeeze_factor=squeeze_factor)
        self.groups = nn.Sequential(*[RSSGroup(embed_dim, spatial_dims, depth, **block_kwargs) for depth in depths])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = conv_nd(spatial_dims, embed_dim, embed_dim, 3)
        self.conv_last = conv_nd(spatial_dims, embed_dim, in_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv_first(x)
        deep = self.norm(self.groups(self.embed_norm(shallow.movedim(1, -1)))).movedim(-1, 1)
        return x + self.conv_last(self.conv_after_body(deep) + shallow)


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
    reported=(
        ReportedResult("Urban100, classic SR x4", "PSNR dB", 27.68),
        ReportedResult("Manga109, classic SR x4", "PSNR dB", 32.32),
    ),
    # The paper's classic-SR model (embed 180, 6 RSSGs of 6 RSSBs, expansion 2): 20.42M including its
    # pixel-shuffle upsampler (~0.4M), which an image-to-image net leaves out (our count lands ~1% below).
    paper_params_m=20.42,
    presets={
        "paper": {"embed_dim": 180, "depths": (6,) * 6, "mlp_ratio": 2.0, "squeeze_factor": 30},
        "denoise": {"embed_dim": 180, "depths": (6,) * 6, "mlp_ratio": 1.2, "squeeze_factor": 30},
        "tiny": {"embed_dim": 16, "depths": (1, 1), "d_state": 4},
    },
    reference_input={2: (3, 64, 64), 3: (1, 32, 32, 32)},
    notes="Same-size output (no upsampler); out_channels must equal in_channels. 3D is our extension "
    "(SS3D with 6 routes, Conv3d channel-attention block). 'denoise' is the official colour-denoising setting.",
)
def mambair(spatial_dims: int = 2, in_channels: int = 1, out_channels: int | None = None, **kwargs) -> MambaIR:
    """MambaIR restoration net with global residual learning."""
    return MambaIR(spatial_dims, in_channels, out_channels, **kwargs)
