"""MHS-VM's gated fusion of route outputs on the CPU with numba: one pass forward, one pass backward.

Per batch, channel and position, over the R route values y_r: S = sum y_r, m = S / R, lo = min y_r,
sd = sqrt(sum (y_r - m)^2 / (R - 1)), cv = sd / (m - lo + eps), out = S relu(cv - t). Backward recomputes these
from y and forms dy_r = g w + [cv > t] g S (dcv/dy_r), with dcv/dy_r = (y_r - m) / ((R - 1) sd den)
- cv / den (1 / R - [r = argmin]) and den = m - lo + eps; where sd is 0 (all routes equal) the sd term is 0. A
tie for the minimum sends its gradient to the first route holding it. In parallel over the (batch, channel) rows.
"""
from __future__ import annotations

import math

import torch
from numba import njit, prange

from medmamba.kernels.selective_scan_numba import NUMBA_OPTIONS, sync_threads


@njit(parallel=True, **NUMBA_OPTIONS)
def _fusion_forward_kernel(ys, threshold, eps, out):
    batch, routes, channels, length = ys.shape
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for p in range(length):
            total, low = ys[b, 0, c, p], ys[b, 0, c, p]
            for r in range(1, routes):
                total += ys[b, r, c, p]
                low = min(low, ys[b, r, c, p])
            mean = total / routes
            squares = ys.dtype.type(0)
            for r in range(routes):
                squares += (ys[b, r, c, p] - mean) ** 2
            cv = math.sqrt(squares / (routes - 1)) / (mean - low + eps)
            out[b, c, p] = total * max(cv - threshold, ys.dtype.type(0))


@njit(parallel=True, **NUMBA_OPTIONS)
def _fusion_backward_kernel(ys, grad, threshold, eps, dys):
    batch, routes, channels, length = ys.shape
    zero = ys.dtype.type(0)
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for p in range(length):
            total, low, arg = ys[b, 0, c, p], ys[b, 0, c, p], 0
            for r in range(1, routes):
                total += ys[b, r, c, p]
                if ys[b, r, c, p] < low:
                    low, arg = ys[b, r, c, p], r
            mean = total / routes
            squares = zero
            for r in range(routes):
                squares += (ys[b, r, c, p] - mean) ** 2
            sd = math.sqrt(squares / (routes - 1))
            den = mean - low + eps
            cv = sd / den
            g = grad[b, c, p]
            direct = g * max(cv - threshold, zero)
            dcv = g * total if cv > threshold else zero
            d_sd = dcv / (den * sd * (routes - 1)) if sd > zero else zero
            d_mean = -dcv * cv / den / routes
            for r in range(routes):
                dys[b, r, c, p] = direct + d_sd * (ys[b, r, c, p] - mean) + d_mean
            dys[b, arg, c, p] += dcv * cv / den


def _compute(t: torch.Tensor) -> torch.Tensor:
    dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    return t.detach().to(dtype).contiguous()


def gated_route_fusion_numba_fwd(ys: torch.Tensor, threshold: float, eps: float) -> torch.Tensor:
    """(B, R, C, L) -> (B, C, L) in ys's dtype (computed in float32, float64 for float64)."""
    data = _compute(ys)
    out = torch.empty(data.shape[0], *data.shape[2:], dtype=data.dtype)
    sync_threads()
    arr = data.numpy()
    _fusion_forward_kernel(arr, arr.dtype.type(threshold), arr.dtype.type(eps), out.numpy())
    return out.to(ys.dtype)


def gated_route_fusion_numba_bwd(ys: torch.Tensor, grad: torch.Tensor, threshold: float, eps: float) -> torch.Tensor:
    """The gradient of ys, (B, R, C, L) in ys's dtype."""
    data = _compute(ys)
    dys = torch.empty_like(data)
    sync_threads()
    arr = data.numpy()
    _fusion_backward_kernel(arr, _compute(grad).to(data.dtype).numpy(), arr.dtype.type(threshold),
                            arr.dtype.type(eps), dys.numpy())
    return dys.to(ys.dtype)


def warm_up(dtypes=(torch.float32, torch.float64)) -> None:
    """Compile (or load from the cache) both kernels for ``dtypes``."""
    for dtype in dtypes:
        ys = torch.ones(1, 2, 1, 1, dtype=dtype)
        gated_route_fusion_numba_bwd(ys, gated_route_fusion_numba_fwd(ys, 0.0, 1e-5), 0.0, 1e-5)
