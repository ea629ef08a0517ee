"""MHS-VM's multi-head scan: heads are channel subspaces, each scanning its own subset of routes, the route
outputs of a head fused by scan route attention (SRA)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.scan import Route, cross_merge, cross_scan, default_routes
from medmamba.networks.blocks.ssm import RouteSSM, dt_rank_for


class ScanRouteAttention(nn.Module):
    """Fuse R route outputs (B, R, C, L) -> (B, C, L): their sum, weighted per position and channel by
    ReLU(cv - threshold), where cv is the coefficient of variation across routes (MHS-VM's SRA / GFU)."""

    def __init__(self, threshold: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.threshold, self.eps = threshold, eps

    def forward(self, ys: torch.Tensor) -> torch.Tensor:
        if ys.shape[1] < 2:
            raise ValueError("scan route attention needs at least 2 routes per head")
        shifted_mean = (ys - ys.amin(dim=1, keepdim=True)).mean(dim=1)
        cv = ys.std(dim=1) / (shifted_mean + self.eps)
        return ys.sum(dim=1) * F.relu(cv - self.threshold)


class MultiHeadScan(nn.Module):
    """MHS mixer on channels-last input (B, *spatial, dim), gated as MHS-VM's VSSGate.

    in_proj to x, z -> depthwise ConvNd + SiLU on x -> project into ``num_heads`` subspaces of ``dim // num_heads``
    channels -> head h scans routes ``routes[h::num_heads]`` (per-route S6 parameters; all heads in one
    selective-scan call) -> SRA per head -> concat -> LayerNorm -> project back -> LayerNorm -> gate SiLU(z).
    """

    def __init__(self, dim: int, spatial_dims: int, num_heads: int | None = None, d_state: int = 16,
                 d_conv: int = 3, dt_rank: int | str = "auto", sra_threshold: float = 0.0,
                 routes: Sequence[Route] | None = None):
        super().__init__()
        routes = list(routes) if routes is not None else default_routes(spatial_dims)
        num_heads = num_heads or len(routes) // 2
        if not 1 <= num_heads <= len(routes) // 2:
            raise ValueError(f"num_heads must be in 1..{len(routes) // 2} for {len(routes)} routes (2+ per head)")
        self.head_routes = [routes[h::num_heads] for h in range(num_heads)]
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        inner = self.head_dim * num_heads
        self.in_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.conv = conv_nd(spatial_dims, dim, dim, d_conv, groups=dim)
        self.head_proj = nn.Linear(dim, inner, bias=False)
        self.ssm = RouteSSM(self.head_dim, sum(len(r) for r in self.head_routes), d_state,
                            dt_rank_for(self.head_dim, dt_rank))
        self.sra = ScanRouteAttention(sra_threshold)
        self.cat_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv(x.movedim(-1, 1))).movedim(1, -1)
        heads = self.head_proj(x).movedim(-1, 1).split(self.head_dim, dim=1)
        ys = self.ssm(torch.cat([cross_scan(h, r) for h, r in zip(heads, self.head_routes)], dim=1))
        ys = ys.reshape(b, -1, self.head_dim, *spatial)
        fused, k = [], 0
        for routes in self.head_routes:
            per_route = [cross_merge(ys[:, k + i : k + i + 1], [r]) for i, r in enumerate(routes)]
            fused.append(self.sra(torch.stack(per_route, dim=1)))
            k += len(routes)
        y = torch.cat(fused, dim=1).transpose(1, 2)  # (B, L, inner)
        y = self.out_norm(self.out_proj(self.cat_norm(y)))
        return y.reshape(b, *spatial, -1) * F.silu(z)
