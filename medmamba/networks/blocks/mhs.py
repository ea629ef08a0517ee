"""MHS-VM's multi-head scan (Ji, arXiv 2406.05992): the channels are projected into ``num_heads`` subspaces; head i
scans its subspace along scan pattern i (C continuous, X diagonal, S spiral, Z zigzag: four sequences each, see
``medmamba.kernels.routes``) with its own S6 parameters per sequence, and the four outputs of a head are fused by
the gated fusion unit."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.kernels import MHS_PATTERNS, gated_route_fusion
from medmamba.networks.blocks.conv import conv_nd
from medmamba.networks.blocks.scan import cross_scan, cross_unscan, mhs_routes
from medmamba.networks.blocks.ssm import RouteSSM, dt_rank_for, scan_route_groups


class ScanRouteAttention(nn.Module):
    """Gated fusion unit (the paper's scan route attention): route outputs (B, R, C, L) -> (B, C, L), their sum
    weighted per position and channel by ReLU(cv - threshold), cv the coefficient of variation across routes
    (unbiased std over the mean of the outputs shifted by their minimum); ``medmamba.kernels.gated_route_fusion``.

    Args:
        threshold: ``t`` of ReLU(cv - t), MHS-VM's ``gfu_t``.
        eps: added to the shifted mean.
    """

    def __init__(self, threshold: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.threshold, self.eps = threshold, eps

    def forward(self, ys: torch.Tensor) -> torch.Tensor:
        return gated_route_fusion(ys, self.threshold, self.eps)


class MultiHeadScan(nn.Module):
    """MHS mixer on channels-last input (B, *spatial, dim), gated as MHS-VM's VSSGate.

    in_proj to x, z -> depthwise ConvNd + SiLU on x -> project into ``num_heads`` subspaces of ``dim // num_heads``
    channels -> head i scans its subspace along pattern ``MHS_PATTERNS[i]`` (4 sequences, per-sequence S6; all heads
    in one selective-scan call) -> each sequence back to row-major order -> gated fusion per head -> concat ->
    LayerNorm -> project back to ``dim`` -> LayerNorm -> times SiLU(z).

    Args:
        dim: channels in and out.
        spatial_dims: 2 or 3 (3D uses the documented 3D generalisations of the patterns).
        num_heads: 3 (C, X, S) or 4 (C, X, S, Z), as MHS-VM's ``head_num``.
        d_state: S6 state size per channel.
        d_conv: depthwise conv kernel size.
        dt_rank: rank of the dt projection ("auto": ceil(head width / 16)).
        gfu_t: threshold of the gated fusion unit.
    """

    def __init__(self, dim: int, spatial_dims: int, num_heads: int = 4, d_state: int = 16, d_conv: int = 3,
                 dt_rank: int | str = "auto", gfu_t: float = 0.0):
        super().__init__()
        if num_heads not in (3, 4):
            raise ValueError(f"MultiHeadScan: num_heads must be 3 (C, X, S) or 4 (C, X, S, Z), not {num_heads}")
        if dim < num_heads:
            raise ValueError(f"MultiHeadScan: dim {dim} is smaller than num_heads {num_heads}")
        self.patterns = MHS_PATTERNS[:num_heads]
        self.head_routes = [mhs_routes(p, spatial_dims) for p in self.patterns]
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        inner = self.head_dim * num_heads
        self.in_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.conv = conv_nd(spatial_dims, dim, dim, d_conv, groups=dim)
        self.head_proj = nn.Linear(dim, inner, bias=False)
        rank = dt_rank_for(self.head_dim, dt_rank)
        self.head_ssms = nn.ModuleDict({p: RouteSSM(self.head_dim, 4, d_state, rank) for p in self.patterns})
        self.fusion = ScanRouteAttention(gfu_t)
        self.cat_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *spatial, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv(x.movedim(-1, 1))).movedim(1, -1)
        heads = self.head_proj(x).movedim(-1, 1).split(self.head_dim, dim=1)
        xs = torch.cat([cross_scan(h, routes) for h, routes in zip(heads, self.head_routes)], dim=1)
        ys = scan_route_groups(xs, list(self.head_ssms.values())).split(4, dim=1)
        fused = [self.fusion(cross_unscan(y, routes, spatial)) for y, routes in zip(ys, self.head_routes)]
        y = torch.cat(fused, dim=1).transpose(1, 2)  # (B, L, inner)
        y = self.out_norm(self.out_proj(self.cat_norm(y)))
        return y.reshape(b, *spatial, -1) * F.silu(z)
