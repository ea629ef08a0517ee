"""Depthwise causal conv1d with SiLU on the CPU with numba (Mamba's conv before the scan): one pass forward, one
backward, in parallel over the (batch, channel) rows, each row in blocks of steps that stay in cache.

Forward: pre[t] = bias + sum_k w[k] x[t - (K - 1) + k] (zero before the start), out = silu(pre). Backward recomputes
pre and with g' = dout silu'(pre): dx[s] = sum_k w[k] g'[s + (K - 1) - k], dw[k] = sum_t g'[t] x[t - (K - 1) + k],
dbias = sum_t g'[t]. Taps outer and steps inner, so the step loops vectorise.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from medmamba.kernels.selective_scan_numba import NUMBA_OPTIONS, compute_dtype, kernel_array, sigmoid, sync_threads

BLOCK = 2048  # steps per block


@njit(**NUMBA_OPTIONS)
def _pre_activation(x, w, bias, b, c, t0, n, pre):
    """pre[i] = bias + sum_k w[c, k] x[b, c, t0 + i - (K - 1) + k] for i < n."""
    taps = w.shape[1]
    for i in range(n):
        pre[i] = bias[c]
    for k in range(taps):
        shift = taps - 1 - k
        for i in range(max(0, shift - t0), n):
            pre[i] += w[c, k] * x[b, c, t0 + i - shift]


@njit(parallel=True, **NUMBA_OPTIONS)
def _forward_kernel(x, w, bias, out):
    batch, channels, length = x.shape
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        pre = np.empty(BLOCK, x.dtype)
        for t0 in range(0, length, BLOCK):
            n = min(BLOCK, length - t0)
            _pre_activation(x, w, bias, b, c, t0, n, pre)
            for i in range(n):
                out[b, c, t0 + i] = pre[i] * sigmoid(pre[i])


@njit(parallel=True, **NUMBA_OPTIONS)
def _backward_kernel(x, w, bias, dout, dx, dw, dbias):
    """dw, dbias: (batch, channels, K) and (batch, channels) per batch item, summed by the caller."""
    batch, channels, length = x.shape
    taps = w.shape[1]
    one = x.dtype.type(1)
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        pre = np.empty(BLOCK, x.dtype)
        grad = np.zeros(BLOCK + taps - 1, x.dtype)  # g' of steps t0 .. t0 + n - 1, then of the K - 1 after
        for k in range(taps):
            dw[b, c, k] = 0
        dbias[b, c] = 0
        for t0 in range(BLOCK * ((length - 1) // BLOCK), -1, -BLOCK):
            n = min(BLOCK, length - t0)
            for i in range(taps - 1):  # the block after this one (zero after the end)
                grad[n + i] = grad[i] if t0 + BLOCK < length else 0
            _pre_activation(x, w, bias, b, c, t0, n, pre)
            for i in range(n):
                s = sigmoid(pre[i])
                grad[i] = dout[b, c, t0 + i] * s * (one + pre[i] * (one - s))
                dbias[b, c] += grad[i]
            for i in range(n):
                dx[b, c, t0 + i] = 0
            for k in range(taps):
                shift = taps - 1 - k
                acc = x.dtype.type(0)
                for i in range(max(0, shift - t0), n):
                    acc += grad[i] * x[b, c, t0 + i - shift]
                dw[b, c, k] += acc
                for i in range(n):
                    dx[b, c, t0 + i] += w[c, k] * grad[i + shift]


def causal_conv1d_silu_numba_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (B, C, L), weight (C, K), bias (C,) -> silu(causal depthwise conv) (B, C, L) in x's dtype."""
    compute = compute_dtype(x)
    out = torch.empty(x.shape, dtype=compute)
    sync_threads()
    _forward_kernel(kernel_array(x, compute), kernel_array(weight, compute), kernel_array(bias, compute), out.numpy())
    return out.to(x.dtype)


def causal_conv1d_silu_numba_bwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                 dout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of x, weight and bias, each in its input's dtype."""
    compute = compute_dtype(x)
    dx = torch.empty(x.shape, dtype=compute)
    dw = torch.empty(x.shape[0], *weight.shape, dtype=compute)
    dbias = torch.empty(x.shape[0], x.shape[1], dtype=compute)
    sync_threads()
    _backward_kernel(kernel_array(x, compute), kernel_array(weight, compute), kernel_array(bias, compute),
                     kernel_array(dout, compute), dx.numpy(), dw.numpy(), dbias.numpy())
    return dx.to(x.dtype), dw.sum(0).to(weight.dtype), dbias.sum(0).to(bias.dtype)


def warm_up(dtypes=(torch.float32, torch.float64)) -> None:
    """Compile (or load from the cache) both kernels for ``dtypes``."""
    for dtype in dtypes:
        x, w, b = torch.ones(1, 1, 3, dtype=dtype), torch.ones(1, 2, dtype=dtype), torch.ones(1, dtype=dtype)
        causal_conv1d_silu_numba_bwd(x, w, b, causal_conv1d_silu_numba_fwd(x, w, b))
