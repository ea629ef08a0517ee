"""Selective state space (S6) parameters for K scan routes, evaluated with one ``selective_scan`` call."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from medmamba.kernels import cross_merge, cross_rescan, cross_scan, selective_scan
from medmamba.kernels.routes import AnyRoute


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


def _checked_groups(groups: Sequence[RouteSSM], routes: int, fn: str) -> RouteSSM:
    """The first group, after checking that all share width, state size and dt rank and have ``routes`` routes."""
    first = groups[0]
    if any((g.d_inner, g.d_state, g.dt_rank) != (first.d_inner, first.d_state, first.dt_rank) for g in groups):
        raise ValueError(f"{fn}: the groups differ in d_inner, d_state or dt_rank")
    if routes != sum(g.num_routes for g in groups):
        raise ValueError(f"{fn}: {routes} routes given, the groups have {sum(g.num_routes for g in groups)}")
    return first


def _cat(groups: Sequence[RouteSSM], name: str) -> torch.Tensor:
    params = [getattr(g, name) for g in groups]
    return params[0] if len(params) == 1 else torch.cat(params)


def _scan(xs: torch.Tensor, dt_low: torch.Tensor, Bs: torch.Tensor, Cs: torch.Tensor, groups: Sequence[RouteSSM],
          z: torch.Tensor | None = None) -> torch.Tensor:
    """The groups' S6 over routed sequences xs (B, K, d_inner, L), given the x_proj parts in route order: dt_low
    (B, K, dt_rank, L), Bs and Cs (B, K, N, L) in any layout."""
    b, k, d, length = xs.shape
    state_dtype = torch.float64 if xs.dtype == torch.float64 else torch.float32  # A, D, dt bias in fp32 at least
    dts = torch.matmul(_cat(groups, "dt_projs_weight").to(xs.dtype), dt_low)
    ys = selective_scan(
        xs.reshape(b, k * d, length).to(state_dtype),
        dts.reshape(b, k * d, length).to(state_dtype),
        -torch.exp(_cat(groups, "A_logs").to(state_dtype)),
        Bs.to(state_dtype),
        Cs.to(state_dtype),
        _cat(groups, "Ds").to(state_dtype),
        z=z,
        delta_bias=_cat(groups, "dt_projs_bias").to(state_dtype).view(-1),
        delta_softplus=True,
    )
    return ys.view(b, k, d, length)


def scan_route_groups(xs: torch.Tensor, groups: Sequence[RouteSSM], z: torch.Tensor | None = None) -> torch.Tensor:
    """Several ``RouteSSM`` of the same width, state size and dt rank in one ``selective_scan`` call, on sequences
    already routed (and maybe transformed since, as by Mamba's causal conv); ``cross_selective_scan`` for a map.

    Args:
        xs: (B, K, d_inner, L) with K the groups' routes in order.
        groups: the modules whose per-route parameters are concatenated along K.
        z: optional gate (B, K * d_inner, L): the scan returns its output times silu(z) (mamba_ssm's ``z``).

    Returns:
        (B, K, d_inner, L) in float32 (float64 for float64 xs): as VMamba's and MHS-VM's code, the scan's inputs are
        upcast after the projections, so that what follows (sums over routes, MHS-VM's gated fusion) runs in float32
        under fp16/bf16 autocast.
    """
    first = _checked_groups(groups, xs.shape[1], "scan_route_groups")
    # x_proj's three parts as batched matmuls over (B, K), each in the layout the scan reads without copying:
    # dt (B, K, d, L); B and C time-major (B, K, L, N), passed as their (B, K, N, L) transposes
    w_dt, w_b, w_c = _cat(groups, "x_proj_weight").to(xs.dtype).split([first.dt_rank, first.d_state, first.d_state],
                                                                        dim=1)
    xs_t = xs.transpose(-1, -2)
    return _scan(xs, torch.matmul(w_dt, xs), torch.matmul(xs_t, w_b.transpose(-1, -2)).transpose(-1, -2),
                 torch.matmul(xs_t, w_c.transpose(-1, -2)).transpose(-1, -2), groups, z)


def cross_selective_scan(x: torch.Tensor, routes: Sequence[AnyRoute], ssm: RouteSSM) -> torch.Tensor:
    """x scanned along each route with ``ssm``'s per-route S6 and the routes' outputs summed back on the grid
    (VMamba's cross-scan -> S6 -> cross-merge).

    x_proj acts on each token alone, so the per-route projections (dt, B, C) are computed on the grid in one matmul
    and laid out along the routes afterwards (``cross_rescan``): the numbers of projecting the K routed copies, with
    one small routed copy (K (dt_rank + 2 N) rows) instead of K batched matmuls over the routed x. Where dt_rank + 2 N
    is below d_inner (VMamba's blocks, not MHS-VM's narrow heads) that is faster, most in training.

    Args:
        x: (B, d_inner, *spatial).
        routes: ``ssm.num_routes`` routes.
        ssm: the per-route parameters.

    Returns:
        (B, d_inner, L) in float32 (float64 for float64 x), as ``scan_route_groups``.
    """
    _checked_groups([ssm], len(routes), "cross_selective_scan")
    b, _, *spatial = x.shape
    length = math.prod(spatial)
    flat = x.flatten(2)
    proj = torch.bmm(ssm.x_proj_weight.to(x.dtype).flatten(0, 1).expand(b, -1, -1), flat)  # no transposed copy
    dt_low, Bs, Cs = cross_rescan(proj.view(b, len(routes), -1, length), routes, spatial_shape=spatial).split(
        [ssm.dt_rank, ssm.d_state, ssm.d_state], dim=2)
    ys = _scan(cross_scan(x, routes), dt_low, Bs, Cs, [ssm])
    return cross_merge(ys, routes, spatial_shape=spatial)
