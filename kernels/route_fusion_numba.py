"""MHS-VM's gated fusion of route outputs on the CPU with numba: one pass forward, one pass backward.

Per batch, channel and position, over the R route values y_r: S = sum y_r, m = S / R, lo = min y_r,
sd = sqrt(sum (y_r - m)^2 / (R - 1)), cv = sd / (m - lo + eps), out = S relu(cv - t). Backward recomputes these
from y and forms dy_r = g w + [cv > t] g S (dcv/dy_r), with dcv/dy_r = (y_r - m) / ((R - 1) sd den)
- cv / den (1 / R - [r = argmin]) and den = m - lo + eps; where sd is 0 (all routes equal) the sd term is 0. A
tie for the minimum sends its gradient to the first route holding it. In parallel over the (batch, channel) rows,
each row's statistics in row-length buffers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from medmamba.kernels.selective_scan_numba import NUMBA_OPTIONS, compute_dtype, kernel_array, sync_threads


@njit(**NUMBA_OPTIONS)
def _row_statistics(ys, b, c, eps):
    """Per position of row (b, c): the routes' sum, minimum, mean, standard deviation, coefficient of variation
    (rows of one array) and the first route holding the minimum. Routes outer, positions inner: every loop runs
    along contiguous positions and vectorises."""
    routes, length = ys.shape[1], ys.shape[3]
    zero = ys.dtype.type(0)
    stats = np.empty((5, length), ys.dtype)
    arg = np.empty(length, np.int64)
    total, low, mean, sd, cv = stats[0], stats[1], stats[2], stats[3], stats[4]
    for p in range(length):
        total[p], low[p], arg[p] = ys[b, 0, c, p], ys[b, 0, c, p], 0
    for r in range(1, routes):
        for p in range(length):
            y = ys[b, r, c, p]
            total[p] += y
            arg[p] = r if y < low[p] else arg[p]
            low[p] = min(low[p], y)
    for p in range(length):
        mean[p] = total[p] / routes
        sd[p] = zero
    for r in range(routes):
        for p in range(length):
            sd[p] += (ys[b, r, c, p] - mean[p]) ** 2
    for p in range(length):
        sd[p] = math.sqrt(sd[p] / (routes - 1))
        cv[p] = sd[p] / (mean[p] - low[p] + eps)
    return stats, arg


@njit(parallel=True, **NUMBA_OPTIONS)
def _fusion_forward_kernel(ys, threshold, eps, out):
    batch, routes, channels, length = ys.shape
    zero = ys.dtype.type(0)
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        stats, _ = _row_statistics(ys, b, c, eps)
        for p in range(length):
            out[b, c, p] = stats[0, p] * max(stats[4, p] - threshold, zero)


@njit(parallel=True, **NUMBA_OPTIONS)
def _fusion_backward_kernel(ys, grad, threshold, eps, dys):
    batch, routes, channels, length = ys.shape
    zero = ys.dtype.type(0)
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        stats, arg = _row_statistics(ys, b, c, eps)
        total, low, mean, sd, cv = stats[0], stats[1], stats[2], stats[3], stats[4]
        grads = np.empty((3, length), ys.dtype)
        direct, d_sd, d_mean = grads[0], grads[1], grads[2]
        for p in range(length):
            g = grad[b, c, p]
            den = mean[p] - low[p] + eps
            direct[p] = g * max(cv[p] - threshold, zero)
            dcv = g * total[p] if cv[p] > threshold else zero
            d_sd[p] = dcv / (den * sd[p] * (routes - 1)) if sd[p] > zero else zero
            d_mean[p] = -dcv * cv[p] / den / routes
            low[p] = dcv * cv[p] / den  # from here: the gradient of the minimum
        for r in range(routes):
            for p in range(length):
                y = ys[b, r, c, p]
                dys[b, r, c, p] = direct[p] + d_sd[p] * (y - mean[p]) + d_mean[p] + (low[p] if arg[p] == r else zero)


def gated_route_fusion_numba_fwd(ys: torch.Tensor, threshold: float, eps: float) -> torch.Tensor:
    """(B, R, C, L) -> (B, C, L) in ys's dtype (computed in ``compute_dtype(ys)``)."""
    compute = compute_dtype(ys)
    data = kernel_array(ys, compute)
    out = torch.empty(ys.shape[0], *ys.shape[2:], dtype=compute)
    sync_threads()
    _fusion_forward_kernel(data, data.dtype.type(threshold), data.dtype.type(eps), out.numpy())
    return out.to(ys.dtype)


def gated_route_fusion_numba_bwd(ys: torch.Tensor, grad: torch.Tensor, threshold: float, eps: float) -> torch.Tensor:
    """The gradient of ys, (B, R, C, L) in ys's dtype."""
    compute = compute_dtype(ys)
    data = kernel_array(ys, compute)
    dys = torch.empty(ys.shape, dtype=compute)
    sync_threads()
    _fusion_backward_kernel(data, kernel_array(grad, compute), data.dtype.type(threshold), data.dtype.type(eps),
                            dys.numpy())
    return dys.to(ys.dtype)


def warm_up(dtypes=(torch.float32, torch.float64)) -> None:
    """Compile (or load from the cache) both kernels for ``dtypes``."""
    for dtype in dtypes:
        ys = torch.ones(1, 2, 1, 1, dtype=dtype)
        gated_route_fusion_numba_bwd(ys, gated_route_fusion_numba_fwd(ys, 0.0, 1e-5), 0.0, 1e-5)
