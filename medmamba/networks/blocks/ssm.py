"""Selective state space (S6) parameters for K scan routes, evaluated with one ``selective_scan`` call."""
from __future__ import annotations

import math

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

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        b, k, d, length = xs.shape
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, bs, cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(xs.dtype))
        ys = selective_scan(
            xs.reshape(b, k * d, length),
            dts.reshape(b, k * d, length),
            -torch.exp(self.A_logs.float()),
            bs.contiguous(),
            cs.contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True,
        )
        return ys.view(b, k, d, length)
