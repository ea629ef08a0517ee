"""Vision Mamba (Vim, Zhu et al., ICML 2024, arXiv 2401.09417): a plain (non-hierarchical) classifier of
bidirectional Mamba blocks over patch tokens, with a class token in the middle of the sequence; 2D and 3D."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from medmamba.networks.blocks.conv import as_tuple, conv_nd
from medmamba.networks.blocks.mamba import MambaMixer
from medmamba.networks.nets._unet import drop_path_rates
from medmamba.registry import Paper, ReportedResult, register_model


class BidirectionalMambaBlock(nn.Module):
    """Pre-norm residual block ``x + drop_path(mixer(RMSNorm(x)))`` with a forward + backward Mamba mixer."""

    def __init__(self, dim: int, d_state: int = 16, drop_path: float = 0.0):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.mixer = MambaMixer(dim, d_state=d_state, bidirectional=True, dt_rank=math.ceil(dim / 16))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mixer(self.norm(x)))


class VisionMamba(nn.Module):
    """Patch embedding + learned position embedding + class token at the middle position -> ``depth``
    bidirectional Mamba blocks -> RMSNorm -> the class token's features -> linear head.

    ``img_size`` sets the grid of the learned position embedding; other input sizes (multiples of the patch
    size) interpolate it.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.patch_size = as_tuple(patch_size, spatial_dims)
        self.grid = tuple(s // p for s, p in zip(as_tuple(img_size, spatial_dims), self.patch_size))
        self.patch_embed = conv_nd(spatial_dims, in_channels, embed_dim, self.patch_size, self.patch_size)
        self.patch_embed.padding = (0,) * spatial_dims
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.grid) + 1, embed_dim))
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[BidirectionalMambaBlock(embed_dim, d_state, r) for r in rates])
        self.norm = nn.RMSNorm(embed_dim, eps=1e-5)
        self.head = nn.Linear(embed_dim, out_channels)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _patch_pos_embed(self, grid: tuple[int, ...]) -> torch.Tensor:
        pos = self.pos_embed[:, 1:]
        if grid == self.grid:
            return pos
        pos = pos.transpose(1, 2).reshape(1, -1, *self.grid)
        mode = ("linear", "bilinear", "trilinear")[self.spatial_dims - 1]
        return F.interpolate(pos, size=grid, mode=mode, align_corners=False).flatten(2).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> class-token features (B, embed_dim)."""
        x = self.patch_embed(x)
        grid = tuple(x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2) + self._patch_pos_embed(grid)
        middle = tokens.shape[1] // 2
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :middle], cls, tokens[:, middle:]], dim=1)
        return self.norm(self.blocks(tokens))[:, middle]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model(
    task="classification",
    spatial_dims=(2, 3),
    family="pure Mamba",
    scan="bidirectional (forward + backward over the patch sequence, middle class token)",
    paper=Paper(
        title="Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model",
        venue="ICML",
        year=2024,
        arxiv="2401.09417",
    ),
    code_url="https://github.com/hustvl/Vim",
    reported=(ReportedResult("ImageNet-1K (224^2)", "top-1 accuracy %", 76.1),),
    paper_params_m=7.0,  # Vim-Ti, ImageNet-1K head
    presets={
        "paper": {"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 24, "out_channels": 1000},
        "tiny": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "d_state": 4},
    },
    reference_input={2: (3, 224, 224), 3: (1, 96, 96, 96)},
    notes="Vim-Ti (embed 192, depth 24, patch 16). 3D is our extension: cubic patches, trilinearly interpolated "
    "position embedding.",
)
def vim_tiny(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **kwargs) -> VisionMamba:
    """Vim-Ti: 24 bidirectional Mamba blocks of width 192 on 16-pixel patches."""
    return VisionMamba(spatial_dims, in_channels, out_channels, **kwargs)
