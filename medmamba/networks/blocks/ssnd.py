"""VMamba's SS2D generalised to N dims (SSND) and the VSS block of VMamba / VM-UNet."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.scan import Route, default_routes
from medmamba.networks.blocks.ssm import RouteSSM, cross_selective_scan, dt_rank_for


class SSND(nn.Module):
    """Selective scan over cross-scan routes on channels-last input (B, *spatial, dim).

    in_proj -> depthwise ConvNd + SiLU -> cross-scan along ``routes`` -> S6 with per-route parameters ->
    cross-merge -> LayerNorm -> gate SiLU(z) -> out_proj.
    """

    def __init__(self, dim: int, spatial_dims: int, d_state: int = 16, expand: float = 2, d_conv: int = 3,
                 dt_rank: int | str = "auto", routes: Sequence[Route] | None = None):
        super().__init__()
        self.routes = list(routes) if routes is not None else default_routes(spatial_dims)
        d_inner = int(expand * dim)
        self.d_inner = d_inner
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv = conv_nd(spatial_dims, d_inner, d_inner, d_conv, groups=d_inner)
        self.ssm = RouteSSM(d_inner, len(self.routes), d_state, dt_rank_for(dim, dt_rank))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv(x.movedim(-1, 1)))
        y = cross_selective_scan(x, self.routes, self.ssm)
        y = self.out_norm(y.reshape(b, self.d_inner, -1).transpose(1, 2)).reshape(b, *spatial, self.d_inner)
        return self.out_proj(y * F.silu(z))


class VSSBlock(nn.Module):
    """Pre-norm residual token mixer on channels-last input: ``x + drop_path(mixer(norm(x)))``, plus an
    optional MLP sub-block (VMamba v2); VM-UNet uses ``mixer="ss"`` without MLP, MHS-VM ``mixer="mhs"``."""

    def __init__(self, dim: int, spatial_dims: int, mixer: str = "ss", drop_path: float = 0.0,
                 mlp_ratio: float = 0.0, **mixer_kwargs):
        super().__init__()
        from medmamba.networks.blocks.mhs import MultiHeadScan

        mixers = {"ss": SSND, "mhs": MultiHeadScan}
        if mixer not in mixers:
            raise ValueError(f"mixer must be one of {sorted(mixers)}, not {mixer!r}")
        self.norm = nn.LayerNorm(dim)
        self.mixer = mixers[mixer](dim, spatial_dims, **mixer_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        hidden = int(dim * mlp_ratio)
        self.mlp = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop_path(self.mlp(x))
        return x
