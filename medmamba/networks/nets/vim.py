"""Vision Mamba (Vim, Zhu et al., ICML 2024, arXiv 2401.09417): a plain (non-hierarchical) classifier of
bidirectional Mamba blocks over patch tokens, with a class token in the middle of the sequence; 2D and 3D."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from medmamba.networks.blocks.conv import as_tuple, conv_nd
from medmamba.networks.blocks.mamba import MambaMixer
from medmamba.networks.blocks.stochastic_depth import drop_path_rates
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
    """Patch embedding -> class token inserted at the middle position -> + learned position embedding ->
    ``depth`` bidirectional Mamba blocks -> RMSNorm -> the class token's features -> linear head (hustvl/Vim's
    ``VisionMamba`` with ``use_middle_cls_token``, bimamba v2, ``if_divide_out``, RMSNorm, absolute positions).

    ``pos_embed`` is in sequence order, as the official one: its row ``num_patches // 2`` is the class token's.
    ``img_size`` sets the grid of the learned position embedding; other input sizes (multiples of the patch
    size) interpolate the patches' rows and keep the class token's.

    Args:
        spatial_dims: 2 or 3 (3D is our extension: cubic patches).
        in_channels: image channels.
        out_channels: classes.
        img_size: the input size the position embedding is learned for.
        patch_size: patch side (also the patch embedding's stride).
        embed_dim: token width.
        depth: number of bidirectional Mamba blocks.
        d_state: the S6 state size.
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
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

    def _pos_embed(self, grid: tuple[int, ...]) -> torch.Tensor:
        """The position embedding of a patch grid with the class token in the middle, in sequence order."""
        if grid == self.grid:
            return self.pos_embed
        middle = math.prod(self.grid) // 2
        cls_pos = self.pos_embed[:, middle:middle + 1]
        patch_pos = torch.cat([self.pos_embed[:, :middle], self.pos_embed[:, middle + 1:]], dim=1)
        patch_pos = patch_pos.transpose(1, 2).reshape(1, -1, *self.grid)
        mode = ("linear", "bilinear", "trilinear")[self.spatial_dims - 1]
        patch_pos = F.interpolate(patch_pos, size=grid, mode=mode, align_corners=False).flatten(2).transpose(1, 2)
        middle = math.prod(grid) // 2
        return torch.cat([patch_pos[:, :middle], cls_pos, patch_pos[:, middle:]], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> class-token features (B, embed_dim)."""
        x = self.patch_embed(x)
        grid = tuple(x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2)
        middle = tokens.shape[1] // 2
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([tokens[:, :middle], cls, tokens[:, middle:]], dim=1) + self._pos_embed(grid)
        return self.norm(self.blocks(tokens))[:, middle]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# hustvl/Vim (models_mamba.py) -> ours, outside the Mamba mixers.
_OFFICIAL_NAMES = {
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "patch_embed.proj.weight": "patch_embed.weight",
    "patch_embed.proj.bias": "patch_embed.bias",
    "norm_f.weight": "norm.weight",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
}
# Vim's bimamba-v2 Mamba holds each S6 tensor once per direction (backward: ``_b``); ours (in the mixer) holds
# both, forward first: official forward name, backward name, how the two are joined.
_S6_NAMES = {
    "conv1d.weight": ("conv1d.weight", "conv1d_b.weight", torch.cat),
    "conv1d.bias": ("conv1d.bias", "conv1d_b.bias", torch.cat),
    "ssm.x_proj_weight": ("x_proj.weight", "x_proj_b.weight", torch.stack),
    "ssm.dt_projs_weight": ("dt_proj.weight", "dt_proj_b.weight", torch.stack),
    "ssm.dt_projs_bias": ("dt_proj.bias", "dt_proj_b.bias", torch.stack),
    "ssm.A_logs": ("A_log", "A_b_log", torch.cat),
    "ssm.Ds": ("D", "D_b", torch.cat),
}


def checkpoint_filter(state_dict, model: nn.Module):
    """Map a hustvl/Vim ``VisionMamba`` state dict (bimamba v2, middle class token) to ``VisionMamba``'s.

    ``layers.i`` -> ``blocks.i``; each mixer's forward and backward S6 tensors (``conv1d`` / ``conv1d_b``,
    ``A_log`` / ``A_b_log``, ...) are joined into ours, forward first; ``norm_f`` -> ``norm``. Returns a
    ``medmamba.weights.Converted``.
    """
    from medmamba.weights import Converted

    out = Converted()
    layers = set()
    for key, value in state_dict.items():
        if key in _OFFICIAL_NAMES:
            out.put(_OFFICIAL_NAMES[key], value, key)
        elif m := re.fullmatch(r"layers\.(\d+)\.(norm\.weight|mixer\.(?:in_proj|out_proj)\.(?:weight|bias))", key):
            out.put(f"blocks.{m[1]}.{m[2]}", value, key)
        elif m := re.match(r"layers\.(\d+)\.mixer\.", key):
            layers.add(m[1])
    for layer in sorted(layers, key=int):
        for ours, (forward, backward, join) in _S6_NAMES.items():
            names = [f"layers.{layer}.mixer.{forward}", f"layers.{layer}.mixer.{backward}"]
            if all(name in state_dict for name in names):
                out.put(f"blocks.{layer}.mixer.{ours}", join([state_dict[n] for n in names]), *names)
    return out


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
    notes="Vim-Ti as hustvl/Vim's vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2 "
    "(embed 192, depth 24, patch 16, bimamba v2 with the two directions averaged, RMSNorm, middle class token; "
    "7.15M with the ImageNet head, as the official code); imports its checkpoints. Other input sizes interpolate "
    "the position embedding (the official model takes its img_size only). 3D is our extension: cubic patches, "
    "trilinearly interpolated position embedding.",
    checkpoint_filter=checkpoint_filter,
)
def vim_tiny(spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 2, **kwargs) -> VisionMamba:
    """Vim-Ti: 24 bidirectional Mamba blocks of width 192 on 16-pixel patches."""
    return VisionMamba(spatial_dims, in_channels, out_channels, **kwargs)
