"""Cross-scan, cross-merge and cross-unscan on the CPU with numba: one pass each, any route (axis order or
permutation) read through its cached positions array (step l of route k visits row-major position index[k, l]).

In parallel over the (batch, channel) rows; each pass reads or writes the K route sequences in step order and
makes its random accesses in the one row of the grid, small enough to stay in cache:

- scan:    out[b, k, c, l] = x[b, c, index[k, l]]                  (gather)
- merge:   out[b, c, index[k, l]] = sum_k y[b, k, c, l]            (scatter-add)
- unscan:  out[b, k, c, index[k, l]] = y[b, k, c, l]               (scatter)
- rescan:  out[b, k, c, l] = y[b, k, c, index[k, l]]               (gather; unscan's adjoint)

Scan and merge are each other's adjoint, and unscan and rescan (autograd: ``medmamba.kernels.cross_scan``).
float32 and float64 are computed as they are, other float dtypes in float32 (their merge sums too).

The scatters (merge, unscan) of a route set with a route stepping 4 KiB or more through the row at a time (3D axis
orders with a large inner axis: every step of a 32^3 row's depth route lands in the same L1 cache set) visit each
route's steps in blocks of 4096 in position order instead (``visit_order``): the merge of a 216-channel 32^3 map
along the six 3D routes then takes 23 ms instead of 75 (2 threads). Rows with shorter strides keep the step order,
which is faster there; the gathers (scan, rescan) keep it everywhere (their writes are sequential).
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from medmamba.kernels.selective_scan_numba import NUMBA_OPTIONS, compute_dtype, kernel_array, sync_threads


@njit(parallel=True, **NUMBA_OPTIONS)
def _copy_kernel(src, index, scatter, out):
    """Route k of out from route k of src (or from its only one): gathered through index[k] or scattered."""
    batch, sources, channels, length = src.shape
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for k in range(index.shape[0]):
            s = k if sources > 1 else 0
            if scatter:
                for step in range(length):
                    out[b, k, c, index[k, step]] = src[b, s, c, step]
            else:
                for step in range(length):
                    out[b, k, c, step] = src[b, s, c, index[k, step]]


@njit(parallel=True, **NUMBA_OPTIONS)
def _scatter_in_visit_order(y, steps, positions, accumulate, out):
    """merge (accumulate) or unscan of y (B, K, C, L) visiting route k's steps steps[k] at positions[k]."""
    batch, routes, channels, length = y.shape
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for k in range(routes):
            if accumulate:
                if k == 0:
                    for j in range(length):
                        out[b, 0, c, positions[0, j]] = y[b, 0, c, steps[0, j]]
                else:
                    for j in range(length):
                        out[b, 0, c, positions[k, j]] += y[b, k, c, steps[k, j]]
            else:
                for j in range(length):
                    out[b, k, c, positions[k, j]] = y[b, k, c, steps[k, j]]


@njit(parallel=True, **NUMBA_OPTIONS)
def _merge_kernel(y, index, out):
    batch, routes, channels, length = y.shape
    for row in prange(batch * channels):
        b, c = row // channels, row % channels
        for step in range(length):
            out[b, c, index[0, step]] = y[b, 0, c, step]
        for k in range(1, routes):
            for step in range(length):
                out[b, c, index[k, step]] += y[b, k, c, step]


_TILE_STEPS = 4096  # a route's steps visited in position order within blocks of this many
_TILE_STRIDE_BYTES = 4096  # from this median step through the row on
_VISIT: dict[tuple[int, int], tuple[torch.Tensor, tuple[np.ndarray, np.ndarray] | None]] = {}


def visit_order(index: torch.Tensor, itemsize: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, positions), each (K, L) int32, for the scatters of ``index``'s routes: route k visits its steps
    steps[k] (sorted by position within blocks of _TILE_STEPS steps) at positions[k] = index[k, steps[k]]; None when
    no route's median step through the row reaches _TILE_STRIDE_BYTES. Cached per index tensor and item size (the
    cross-scan's index tensors are cached for good)."""
    cached = _VISIT.get((id(index), itemsize))
    if cached is not None and cached[0] is index:
        return cached[1]
    positions = index.numpy().astype(np.int64)
    stride = np.median(np.abs(np.diff(positions, axis=1)), axis=1).max(initial=0) if positions.shape[1] > 1 else 0
    order = None
    if stride * itemsize >= _TILE_STRIDE_BYTES:
        block = np.arange(positions.shape[1]) // _TILE_STEPS
        steps = np.stack([np.lexsort((row, block)) for row in positions])
        order = (steps.astype(np.int32), np.take_along_axis(positions, steps, axis=1).astype(np.int32))
    _VISIT[id(index), itemsize] = (index, order)
    return order


def route_pass_numba(src: torch.Tensor, index: torch.Tensor, mode: str) -> torch.Tensor:
    """One of the four passes above.

    Args:
        src: x (B, C, L) for "scan", y (B, K, C, L) for the others; any float dtype.
        index: (K, L) positions of the K routes, int32.
        mode: "scan", "merge", "unscan" or "rescan".

    Returns:
        (B, C, L) for "merge", else (B, K, C, L), in src's dtype.
    """
    compute = compute_dtype(src)
    data, positions = kernel_array(src, compute), index.contiguous().numpy()
    if mode == "scan":
        shape = (src.shape[0], index.shape[0], *src.shape[1:])
    elif mode == "merge":
        shape = (src.shape[0], *src.shape[2:])
    else:
        shape = tuple(src.shape)
    out = torch.empty(shape, dtype=compute)
    sync_threads()
    visit = visit_order(index, out.element_size()) if mode in ("merge", "unscan") else None
    if visit is not None:
        target = out.numpy()[:, None] if mode == "merge" else out.numpy()
        _scatter_in_visit_order(data, visit[0], visit[1], mode == "merge", target)
    elif mode == "merge":
        _merge_kernel(data, positions, out.numpy())
    else:
        _copy_kernel(data[:, None] if mode == "scan" else data, positions, mode == "unscan", out.numpy())
    return out.to(src.dtype)


def warm_up(dtypes=(torch.float32, torch.float64)) -> None:
    """Compile (or load from the cache) the four kernels for ``dtypes``."""
    index = torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)
    for dtype in dtypes:
        y = route_pass_numba(torch.ones(1, 1, 2, dtype=dtype), index, "scan")
        for mode in ("merge", "unscan", "rescan"):
            route_pass_numba(y, index, mode)

