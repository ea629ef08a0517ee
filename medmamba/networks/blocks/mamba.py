"""Mamba (S6) mixer over a token sequence, with a depthwise causal conv1d (``medmamba.kernels.causal_conv1d_silu``,
no causal_conv1d package)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.kernels import causal_conv1d_silu
from medmamba.networks.blocks.scan import Route, cross_merge, cross_scan
from medmamba.networks.blocks.ssm import RouteSSM, dt_rank_for


class MambaMixer(nn.Module):
    """Mamba mixer on (B, L, dim) tokens.

    Directions: one forward scan (Mamba / U-Mamba), forward + backward (``bidirectional=True``, Vim), or any
    cross-scan ``routes`` over the token grid (then ``forward`` needs ``spatial_shape``; SegMamba's
    tri-orientated scan). Each direction has its own conv1d and S6 parameters; outputs are averaged, or summed
    with ``sum_directions`` (SegMamba's fork of mamba_ssm, ``bimamba_type="v3"``).
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        bidirectional: bool = False,
        routes: Sequence[Route] | None = None,
        bias: bool = False,
        conv_bias: bool = True,
        sum_directions: bool = False,
    ):
        super().__init__()
        if routes is not None and bidirectional:
            raise ValueError("give routes or bidirectional=True, not both")
        self.routes = list(routes) if routes is not None else None
        self.bidirectional = bidirectional
        k = len(self.routes) if self.routes is not None else 1 + bidirectional
        d_inner = expand * dim
        self.d_inner, self.num_directions, self.sum_directions = d_inner, k, sum_directions
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(k * d_inner, k * d_inner, d_conv, groups=k * d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.ssm = RouteSSM(d_inner, k, d_state, dt_rank_for(dim, dt_rank))
        self.out_proj = nn.Linear(d_inner, dim, bias=bias)

    def forward(self, x: torch.Tensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        b, length, _ = x.shape
        # channels first from the input projection on (as mamba_ssm): W @ x^T per batch item, no transposed copy
        xz = torch.bmm(self.in_proj.weight.expand(b, -1, -1), x.transpose(1, 2))
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias[:, None]
        x, z = xz.chunk(2, dim=1)  # (B, D, L) each
        if self.routes is not None:
            if spatial_shape is None:
                raise ValueError("MambaMixer with routes needs spatial_shape")
            xs = cross_scan(x.reshape(b, self.d_inner, *spatial_shape), self.routes)
        elif self.bidirectional:
            xs = torch.stack([x, x.flip(-1)], dim=1)
        else:
            xs = x[:, None]
        xs = causal_conv1d_silu(xs.flatten(1, 2), self.conv1d.weight, self.conv1d.bias).view_as(xs)
        if self.num_directions == 1:  # the gate inside the scan, as mamba_ssm's selective_scan_fn(z=z)
            return self._out_proj(self.ssm(xs, z=z)[:, 0])
        ys = self.ssm(xs)
        if self.routes is not None:
            y = cross_merge(ys.reshape(b, self.num_directions, self.d_inner, *spatial_shape), self.routes)
        else:
            y = ys[:, 0] + ys[:, 1].flip(-1)
        y = y.reshape(b, self.d_inner, length)
        if not self.sum_directions:
            y = y / self.num_directions
        return self._out_proj(y * F.silu(z))

    def _out_proj(self, y: torch.Tensor) -> torch.Tensor:
        """(B, D, L) -> (B, L, dim) tokens: y^T W^T per batch item, no transposed copy of y."""
        out = torch.bmm(y.transpose(1, 2), self.out_proj.weight.t().expand(y.shape[0], -1, -1))
        return out + self.out_proj.bias if self.out_proj.bias is not None else out


def _route_axis(t: torch.Tensor) -> torch.Tensor:
    return t[None]


# mamba_ssm's ``Mamba`` (one direction) -> ``MambaMixer``: tensor names and the reshape each needs.
MAMBA_SSM_NAMES = {
    "in_proj.weight": ("in_proj.weight", None),
    "in_proj.bias": ("in_proj.bias", None),
    "conv1d.weight": ("conv1d.weight", None),
    "conv1d.bias": ("conv1d.bias", None),
    "x_proj.weight": ("ssm.x_proj_weight", _route_axis),
    "dt_proj.weight": ("ssm.dt_projs_weight", _route_axis),
    "dt_proj.bias": ("ssm.dt_projs_bias", _route_axis),
    "A_log": ("ssm.A_logs", None),
    "D": ("ssm.Ds", None),
    "out_proj.weight": ("out_proj.weight", None),
    "out_proj.bias": ("out_proj.bias", None),
}


class MambaLayer(nn.Module):
    """Pre-norm residual Mamba layer on a channels-first feature map (B, C, *spatial): a Mamba mixer over all
    voxels of a CNN feature map (SegMamba's layers)."""

    def __init__(self, dim: int, **mixer_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, **mixer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.mixer(self.norm(tokens), spatial_shape=spatial)
        return tokens.transpose(1, 2).reshape(x.shape)


class ResidualVisionMambaLayer(nn.Module):
    """LightM-UNet's RVM layer on a channels-first map: ``proj(norm(mamba(norm(x)) + s * x))`` over the voxels as
    tokens, with a learnable scale ``s`` on the residual, one LayerNorm applied twice (as the official
    ``MambaLayer``) and a linear projection to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int | None = None, **mixer_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, **mixer_kwargs)
        self.skip_scale = nn.Parameter(torch.ones(1))
        self.proj = nn.Linear(dim, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, *spatial = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = self.mixer(self.norm(tokens), spatial_shape=spatial) + self.skip_scale * tokens
        tokens = self.proj(self.norm(tokens))
        return tokens.transpose(1, 2).reshape(b, -1, *spatial)
