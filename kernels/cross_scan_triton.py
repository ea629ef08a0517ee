"""Triton cross-scan / cross-merge / cross-unscan: one pass each, no permuted intermediate copies.

Axis-order routes (``Route``) take the fused tiled kernels below; once a permutation route (``PathRoute``) is present,
every route goes through the gather kernels at the end of this file, which read the routes' cached (K, L) index arrays
(device tensors, made once per shape: no host sync per call).

Spatial shapes are padded to three axes (leading size-1 axes). Each program owns one (b, c) row and one 3D tile of
x. Scan loads the tile once and stores it into every route's sequence at the route's positions; merge gathers every
route's values for the tile, sums them in fp32 and stores the tile once. The routes are compiled in (constexpr), so
each route's positions are visibly contiguous along its innermost axis and Triton lays that access out coalesced
(transposing through shared memory when needed). A reversed route visits its tile back-to-front along its innermost
axis, which keeps its sequence positions L-1-p increasing there: scan re-reads that tile view from cache, merge
gathers straight into the tile.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from medmamba.kernels.routes import Route, route_index_tensors

_ROUTE_BITS = 5  # per route: innermost axis (2 bits), middle axis (2 bits), reverse (1 bit); the kernels spell out 5
_ROW_MAJOR = tl.constexpr(6)  # route code of (0, 1, 2) forward: inner axis 2, middle axis 1
_MAX_ROUTES_PER_LAUNCH = 12  # keeps the packed route code within 60 bits
_TILE_ELEMENTS = 4096


@triton.jit
def _pick(AXIS: tl.constexpr, v0, v1, v2):
    if AXIS == 0:
        return v0
    elif AXIS == 1:
        return v1
    else:
        return v2


@triton.jit
def _route_offsets(CODE: tl.constexpr, pid_tile, n_t1, n_t2, S0, S1, S2,
                   T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    """For one route and one tile: sequence positions, matching row-major x offsets, and the in-bounds mask."""
    INNER: tl.constexpr = CODE & 3
    MIDDLE: tl.constexpr = (CODE >> 2) & 3
    OUTER: tl.constexpr = 3 - INNER - MIDDLE
    REVERSE: tl.constexpr = (CODE >> 4) & 1
    T_INNER: tl.constexpr = T0 if INNER == 0 else (T1 if INNER == 1 else T2)
    b0 = (pid_tile // (n_t1 * n_t2)) * T0
    b1 = ((pid_tile // n_t2) % n_t1) * T1
    b2 = (pid_tile % n_t2) * T2
    r0 = tl.arange(0, T0)[:, None, None]
    r1 = tl.arange(0, T1)[None, :, None]
    r2 = tl.arange(0, T2)[None, None, :]
    # a reversed route walks its innermost axis back-to-front inside the tile
    c0 = b0 + ((T0 - 1 - r0) if (REVERSE and INNER == 0) else r0)
    c1 = b1 + ((T1 - 1 - r1) if (REVERSE and INNER == 1) else r1)
    c2 = b2 + ((T2 - 1 - r2) if (REVERSE and INNER == 2) else r2)
    s_inner = _pick(INNER, S0, S1, S2)
    lin = (_pick(OUTER, c0, c1, c2) * _pick(MIDDLE, S0, S1, S2) + _pick(MIDDLE, c0, c1, c2)) * s_inner
    if REVERSE:  # L-1 - (lin + b + T-1-r) = (L - lin - b - T) + r
        pos = (S0 * S1 * S2 - lin - _pick(INNER, b0, b1, b2) - T_INNER) + _pick(INNER, r0, r1, r2)
    else:
        pos = lin + _pick(INNER, c0, c1, c2)
    mask = (c0 < S0) & (c1 < S1) & (c2 < S2)
    return pos, (c0 * S1 + c1) * S2 + c2, mask


@triton.jit
def _scan_route(CODE: tl.constexpr, tile, x_row, out_row, pid_tile, n_t1, n_t2, S0, S1, S2,
                T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    pos, src, mask = _route_offsets(CODE, pid_tile, n_t1, n_t2, S0, S1, S2, T0, T1, T2)
    if (CODE >> 4) & 1:  # reversed: the tile back-to-front along the route's inner axis, read again from cache
        tl.store(out_row + pos, tl.load(x_row + src, mask=mask), mask=mask)
    else:
        tl.store(out_row + pos, tile, mask=mask)


@triton.jit
def _gather_route(CODE: tl.constexpr, y_row, mask, pid_tile, n_t1, n_t2, S0, S1, S2,
                  T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    """The route's values for the tile in tile order: positions p of the forward route, L-1-p if reversed."""
    pos, _, _ = _route_offsets(CODE & 15, pid_tile, n_t1, n_t2, S0, S1, S2, T0, T1, T2)
    if (CODE >> 4) & 1:
        pos = S0 * S1 * S2 - 1 - pos
    return tl.load(y_row + pos, mask=mask)


@triton.jit
def _cross_scan_kernel(x_ptr, out_ptr, stride_xb, stride_xc, C, S0, S1, S2, n_t1, n_t2, n_tiles, K_TOTAL, K_FIRST,
                       ROUTES: tl.constexpr, K: tl.constexpr,
                       T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    pid = tl.program_id(0)
    bc = pid // n_tiles
    pid_tile = pid % n_tiles
    L = S0 * S1 * S2
    b = bc // C
    c = bc % C
    x_row = x_ptr + b.to(tl.int64) * stride_xb + c.to(tl.int64) * stride_xc
    _, x_off, mask = _route_offsets(_ROW_MAJOR, pid_tile, n_t1, n_t2, S0, S1, S2, T0, T1, T2)
    tile = tl.load(x_row + x_off, mask=mask)
    for k in tl.static_range(K):
        out_row = out_ptr + ((b * K_TOTAL + K_FIRST + k) * C + c).to(tl.int64) * L
        _scan_route((ROUTES >> (5 * k)) & 31, tile, x_row, out_row, pid_tile, n_t1, n_t2, S0, S1, S2, T0, T1, T2)


@triton.jit
def _cross_merge_kernel(y_ptr, out_ptr, stride_yb, stride_yk, stride_yc, C, S0, S1, S2, n_t1, n_t2, n_tiles,
                        ROUTES: tl.constexpr, K: tl.constexpr, ACCUMULATE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                        T0: tl.constexpr, T1: tl.constexpr, T2: tl.constexpr):
    pid = tl.program_id(0)
    bc = pid // n_tiles
    pid_tile = pid % n_tiles
    L = S0 * S1 * S2
    b = bc // C
    c = bc % C
    out_row = out_ptr + bc.to(tl.int64) * L
    _, x_off, mask = _route_offsets(_ROW_MAJOR, pid_tile, n_t1, n_t2, S0, S1, S2, T0, T1, T2)
    if ACCUMULATE:
        acc = tl.load(out_row + x_off, mask=mask).to(ACC_DTYPE)
    else:
        acc = tl.zeros((T0, T1, T2), dtype=ACC_DTYPE)
    y_row = y_ptr + b.to(tl.int64) * stride_yb + c.to(tl.int64) * stride_yc
    for k in tl.static_range(K):
        acc += _gather_route((ROUTES >> (5 * k)) & 31, y_row, mask, pid_tile, n_t1, n_t2, S0, S1, S2,
                             T0, T1, T2).to(ACC_DTYPE)
        y_row += stride_yk  # stepping keeps k * stride out of 32-bit products
    tl.store(out_row + x_off, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _route_code(order: tuple[int, ...], reverse: bool) -> int:
    padded = tuple(range(3 - len(order))) + tuple(a + 3 - len(order) for a in order)
    return padded[2] | (padded[1] << 2) | (int(reverse) << 4)


def _tile_shape(spatial3: tuple[int, int, int]) -> tuple[int, int, int]:
    """Power-of-two tile of about _TILE_ELEMENTS, grown evenly over the axes that are long enough."""
    tile = [1, 1, 1]
    limit = [triton.next_power_of_2(s) for s in spatial3]
    while math.prod(tile) < _TILE_ELEMENTS:
        growable = [a for a in (2, 1, 0) if tile[a] < limit[a]]
        if not growable:
            break
        tile[min(growable, key=lambda a: tile[a])] *= 2
    return tuple(tile)


def _rows_contiguous(t: torch.Tensor, lead: int) -> torch.Tensor:
    """t itself when each row (the dims after the first `lead`) is one contiguous block, else a contiguous copy.

    Batch / route / channel strides are free, so a channel slice (one MHS-VM head) is scanned without a copy.
    """
    expected = 1
    for size, stride in zip(reversed(t.shape[lead:]), reversed(t.stride()[lead:])):
        if size != 1 and stride != expected:
            return t.contiguous()
        expected *= size
    return t


def _launches(routes, spatial: tuple[int, ...]):
    """Grid geometry and, per launch of at most _MAX_ROUTES_PER_LAUNCH routes, its first route and packed code."""
    if math.prod(spatial) >= 2**31:
        raise ValueError(f"cross-scan triton: spatial size {spatial} has 2**31 or more positions per channel")
    spatial3 = (1,) * (3 - len(spatial)) + tuple(spatial)
    tile = _tile_shape(spatial3)
    n_t = [triton.cdiv(s, t) for s, t in zip(spatial3, tile)]
    geometry = dict(S=spatial3, n_t1=n_t[1], n_t2=n_t[2], n_tiles=math.prod(n_t), tile=tile,
                    num_warps=8 if math.prod(tile) >= 4096 else 4)
    chunks = []
    for first in range(0, len(routes), _MAX_ROUTES_PER_LAUNCH):
        chunk = routes[first:first + _MAX_ROUTES_PER_LAUNCH]
        code = sum(_route_code(order, reverse) << (_ROUTE_BITS * i) for i, (order, reverse) in enumerate(chunk))
        chunks.append((first, len(chunk), code))
    return geometry, chunks


def _scan(x: torch.Tensor, routes) -> torch.Tensor:
    x = _rows_contiguous(x, 2)
    (b, c), spatial = x.shape[:2], tuple(x.shape[2:])
    out = torch.empty(b, len(routes), c, math.prod(spatial), dtype=x.dtype, device=x.device)
    if out.numel():
        g, chunks = _launches(routes, spatial)
        for first, k, code in chunks:
            _cross_scan_kernel[(b * c * g["n_tiles"],)](
                x, out, x.stride(0), x.stride(1), c, *g["S"], g["n_t1"], g["n_t2"], g["n_tiles"], len(routes), first,
                ROUTES=code, K=k, T0=g["tile"][0], T1=g["tile"][1], T2=g["tile"][2], num_warps=g["num_warps"])
    return out


def _merge(y: torch.Tensor, routes, spatial: tuple[int, ...]) -> torch.Tensor:
    y = _rows_contiguous(y, 3)
    b, _, c, length = y.shape
    g, chunks = _launches(routes, spatial)
    acc_dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    # several launches accumulate through `out`: keep it in the accumulation dtype until the last one
    out = torch.empty(b, c, length, dtype=acc_dtype if len(chunks) > 1 else y.dtype, device=y.device)
    if out.numel():
        for first, k, code in chunks:
            _cross_merge_kernel[(b * c * g["n_tiles"],)](
                y[:, first:], out, y.stride(0), y.stride(1), y.stride(2), c, *g["S"], g["n_t1"], g["n_t2"],
                g["n_tiles"], ROUTES=code, K=k, ACCUMULATE=first > 0,
                ACC_DTYPE=tl.float64 if acc_dtype == torch.float64 else tl.float32,
                T0=g["tile"][0], T1=g["tile"][1], T2=g["tile"][2], num_warps=g["num_warps"])
    return out.to(y.dtype)


# ---- permutation routes: gathers through (K, L) index arrays ----

_GATHER_BLOCK = 1024


@triton.jit
def _gather_kernel(src_ptr, index_ptr, out_ptr, stride_sb, stride_sk, stride_sc, K, C, L,
                   BLOCK: tl.constexpr):
    """out[b, k, c, p] = src[b, k, c, index[k, p]] (src's k stride may be 0: one map scanned along K routes)."""
    row = tl.program_id(0)  # (b, k, c) row-major
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = p < L
    c = row % C
    k = (row // C) % K
    b = row // (C * K)
    src_row = src_ptr + b.to(tl.int64) * stride_sb + k.to(tl.int64) * stride_sk + c.to(tl.int64) * stride_sc
    index = tl.load(index_ptr + k.to(tl.int64) * L + p, mask=mask, other=0)
    tl.store(out_ptr + row.to(tl.int64) * L + p, tl.load(src_row + index, mask=mask), mask=mask)


@triton.jit
def _gather_sum_kernel(src_ptr, index_ptr, out_ptr, stride_sb, stride_sk, stride_sc, K, C, L,
                       ACC_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    """out[b, c, q] = sum_k src[b, k, c, index[k, q]], summed in ACC_DTYPE and rounded once."""
    row = tl.program_id(0)  # (b, c)
    q = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = q < L
    c = row % C
    b = row // C
    src_row = src_ptr + b.to(tl.int64) * stride_sb + c.to(tl.int64) * stride_sc
    acc = tl.zeros((BLOCK,), dtype=ACC_DTYPE)
    for k in range(K):
        index = tl.load(index_ptr + k * L + q, mask=mask, other=0)
        acc += tl.load(src_row + index, mask=mask).to(ACC_DTYPE)
        src_row += stride_sk
    tl.store(out_ptr + row.to(tl.int64) * L + q, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _index_arrays(routes, spatial, device) -> tuple[torch.Tensor, torch.Tensor]:
    return route_index_tensors(routes, spatial, device, torch.int32)


def _gather(src: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """src (B, K or 1, C, L) -> (B, k, C, L) gathered along L by index (k, L); a K of 1 is broadcast."""
    src = _rows_contiguous(src, 3)
    b, _, c, length = src.shape
    out = torch.empty(b, k, c, length, dtype=src.dtype, device=src.device)
    if out.numel():
        grid = (b * k * c, triton.cdiv(length, _GATHER_BLOCK))
        _gather_kernel[grid](src, index, out, src.stride(0), src.stride(1) if src.shape[1] > 1 else 0,
                             src.stride(2), k, c, length, BLOCK=_GATHER_BLOCK)
    return out


def _gather_sum(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """src (B, K, C, L) -> (B, C, L): the K gathers summed."""
    src = _rows_contiguous(src, 3)
    b, k, c, length = src.shape
    out = torch.empty(b, c, length, dtype=src.dtype, device=src.device)
    if out.numel():
        acc = tl.float64 if src.dtype == torch.float64 else tl.float32
        grid = (b * c, triton.cdiv(length, _GATHER_BLOCK))
        _gather_sum_kernel[grid](src, index, out, src.stride(0), src.stride(1), src.stride(2), k, c, length,
                                 ACC_DTYPE=acc, BLOCK=_GATHER_BLOCK)
    return out


class _PermutedScan(torch.autograd.Function):
    """x (B, C, L) -> (B, K, C, L) along index; backward gathers back through inverse and sums."""

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(index, inverse)
        return _gather(x.unsqueeze(1), index, index.shape[0])

    @staticmethod
    def backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _PermutedMerge.apply(grad, inverse, index), None, None


class _PermutedMerge(torch.autograd.Function):
    """y (B, K, C, L) -> (B, C, L) summing the K gathers along index (the inverse arrays); backward is a scan."""

    @staticmethod
    def forward(ctx, y, index, inverse):
        ctx.save_for_backward(index, inverse)
        return _gather_sum(y, index)

    @staticmethod
    def backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _PermutedScan.apply(grad, inverse, index), None, None


class _PermutedUnscan(torch.autograd.Function):
    """y (B, K, C, L) -> (B, K, C, L) each row gathered along its own index; backward gathers along the inverse."""

    @staticmethod
    def forward(ctx, y, index, inverse):
        ctx.save_for_backward(index, inverse)
        return _gather(y, index, index.shape[0])

    @staticmethod
    def backward(ctx, grad):
        index, inverse = ctx.saved_tensors
        return _PermutedUnscan.apply(grad, inverse, index), None, None


class _CrossScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, routes):
        ctx.routes, ctx.shape = routes, x.shape
        return _scan(x, routes)

    @staticmethod
    def backward(ctx, grad):  # through the merge Function, so double backward works too
        return _CrossMerge.apply(grad, ctx.routes, tuple(ctx.shape[2:])).view(ctx.shape), None


class _CrossMerge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, routes, spatial):
        ctx.routes, ctx.spatial = routes, spatial
        return _merge(y, routes, spatial)

    @staticmethod
    def backward(ctx, grad):
        return _CrossScan.apply(grad.reshape(*grad.shape[:2], *ctx.spatial), ctx.routes), None, None


def _axis_routes_only(routes) -> bool:
    return all(isinstance(r, Route) for r in routes)


def cross_scan_triton(x: torch.Tensor, routes) -> torch.Tensor:
    """x (B, C, *spatial) with 1-3 spatial axes -> (B, K, C, L); differentiable (backward = merge)."""
    routes = tuple(routes)
    if _axis_routes_only(routes):
        return _CrossScan.apply(x, routes)
    positions, inverse = _index_arrays(routes, tuple(x.shape[2:]), x.device)
    return _PermutedScan.apply(x.flatten(2), positions, inverse)


def cross_merge_triton(y: torch.Tensor, routes, spatial: tuple[int, ...]) -> torch.Tensor:
    """y (B, K, C, L) -> (B, C, L); differentiable (backward = scan)."""
    routes = tuple(routes)
    if _axis_routes_only(routes):
        return _CrossMerge.apply(y, routes, tuple(spatial))
    positions, inverse = _index_arrays(routes, tuple(spatial), y.device)
    return _PermutedMerge.apply(y, inverse, positions)


def cross_unscan_triton(y: torch.Tensor, routes, spatial: tuple[int, ...]) -> torch.Tensor:
    """y (B, K, C, L) -> (B, K, C, L), each route's sequence in row-major order; differentiable."""
    positions, inverse = _index_arrays(tuple(routes), tuple(spatial), y.device)
    return _PermutedUnscan.apply(y, inverse, positions)
