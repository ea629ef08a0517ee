"""Selective state space (S6) parameters for K scan routes, evaluated with one ``selective_scan`` call."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.kernels import selective_scan


def dt_rank_for(dim: int, dt_rank: int | str = "auto") -> int:
    """Mamba's default rank of the dt projection: ceil(model dim / 16)."""
    return math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)


class RouteSSM(nn.Module):
    """S6 with separate x_proj / dt_proj / A / D per route (VMamba's layout).

    Input and output: (B, K, d_inner, L), one sequence of ``d_inner`` channels per route.
    """

    def __init__(
        self,
        d_inner: int,
        num_routes: int,
        d_state: int,
        dt_rank: int,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        k, d, n = num_routes, d_inner, d_state
        r = dt_rank
        self.num_routes, self.d_inner, self.d_state, self.dt_rank = k, d, n, r
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d).uniform_(-(d**-0.5), d**-0.5))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-(r**-0.5), r**-0.5))
        dt = torch.exp(torch.rand(k, d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(k * d, 1))
        self.Ds = nn.Parameter(torch.ones(k * d))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True

    def forward(self, xs: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return scan_route_groups(xs, [self], z)


def scan_route_groups(xs: torch.Tensor, groups: Sequence[RouteSSM], z: torch.Tensor | None = None) -> torch.Tensor:
    """Several ``RouteSSM`` of the same width, state size and dt rank (e.g. one per MHS-VM head) in one
    ``selective_scan`` call.

    Args:
        xs: (B, K, d_inner, L) with K the groups' routes in order.
        groups: the modules whose per-route parameters are concatenated along K.
        z: optional gate (B, K * d_inner, L): the scan returns its output times silu(z) (mamba_ssm's ``z``).

    Returns:
        (B, K, d_inner, L) in float32 (float64 for float64 xs): as VMamba's and MHS-VM's code, the scan's inputs are
        upcast after the projections, so that what follows (sums over routes, MHS-VM's gated fusion) runs in float32
        under fp16/bf16 autocast.
    """
    first = groups[0]
    b, k, d, length = xs.shape
    if any((g.d_inner, g.d_state, g.dt_rank) != (first.d_inner, first.d_state, first.dt_rank) for g in groups):
        raise ValueError("scan_route_groups: the groups differ in d_inner, d_state or dt_rank")
    if k != sum(g.num_routes for g in groups):
        raise ValueError(f"scan_route_groups: xs has {k} routes, the groups {sum(g.num_routes for g in groups)}")

    def cat(name: str) -> torch.Tensor:
        params = [getattr(g, name) for g in groups]
        return params[0] if len(params) == 1 else torch.cat(params)

    state_dtype = torch.float64 if xs.dtype == torch.float64 else torch.float32  # A, D, dt bias in fp32 at least
    # x_proj's three parts as batched matmuls over (B, K), each in the layout the scan reads without copying:
    # dt (B, K, d, L); B and C time-major (B, K, L, N), passed as their (B, K, N, L) transposes
    w_dt, w_b, w_c = cat("x_proj_weight").to(xs.dtype).split([first.dt_rank, first.d_state, first.d_state], dim=1)
    dts = torch.matmul(cat("dt_projs_weight").to(xs.dtype), torch.matmul(w_dt, xs))
    xs_t = xs.transpose(-1, -2)
    ys = selective_scan(
        xs.reshape(b, k * d, length).to(state_dtype),
        dts.reshape(b, k * d, length).to(state_dtype),
        -torch.exp(cat("A_logs").to(state_dtype)),
        torch.matmul(xs_t, w_b.transpose(-1, -2)).to(state_dtype).transpose(-1, -2),
        torch.matmul(xs_t, w_c.transpose(-1, -2)).to(state_dtype).transpose(-1, -2),
        cat("Ds").to(state_dtype),
        z=z,
        delta_bias=cat("dt_projs_bias").to(state_dtype).view(-1),
        delta_softplus=True,
    )
    return ys.view(b, k, d, length)
