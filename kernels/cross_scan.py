"""Cross-scan and cross-merge: flatten a (B, C, *spatial) map into K route sequences and map route outputs back.

A route flattens the spatial axes in `order` (outermost first) and optionally reverses the sequence.
`cross_merge` is the exact adjoint of `cross_scan`: each route's sequence is un-permuted and the routes are summed,
so <cross_scan(x), y> == <x, cross_merge(y)>. On CUDA a fused Triton kernel does each in one pass
(`cross_scan_triton`); elsewhere the torch path below (permute / flip / flatten) is used. Both are differentiable.
Multi-head scans (MHS-VM) call `cross_scan(x[:, head_channels], head_routes)` per head: the Triton path reads such a
channel slice in place.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import torch


class Route(NamedTuple):
    """Spatial axes from outermost to innermost in the flattening; `reverse` flips the sequence."""

    order: tuple[int, ...]
    reverse: bool = False


ROUTES_2D: list[Route] = [Route((0, 1), False), Route((1, 0), False), Route((0, 1), True), Route((1, 0), True)]
_ORDERS_3D = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
ROUTES_3D: list[Route] = [Route(o, False) for o in _ORDERS_3D] + [Route(o, True) for o in _ORDERS_3D]

_BACKENDS = ("auto", "torch", "triton")


def _check_routes(routes: Sequence[Route] | None, n_spatial: int, fn: str) -> tuple[Route, ...]:
    if routes is None:
        if n_spatial == 2:
            return tuple(ROUTES_2D)
        if n_spatial == 3:
            return tuple(ROUTES_3D)
        raise ValueError(f"{fn}: routes=None has a default only for 2 or 3 spatial axes, got {n_spatial}")
    checked = []
    for route in routes:
        order, reverse = Route(*route) if not isinstance(route, Route) else route
        order = tuple(int(a) for a in order)
        if sorted(order) != list(range(n_spatial)):
            raise ValueError(f"{fn}: route order {order} is not a permutation of the {n_spatial} spatial axes "
                             f"{tuple(range(n_spatial))}")
        checked.append(Route(order, bool(reverse)))
    if not checked:
        raise ValueError(f"{fn}: routes is empty")
    return tuple(checked)


_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _use_triton(t: torch.Tensor, n_spatial: int, backend: str, fn: str) -> bool:
    if backend not in _BACKENDS:
        raise ValueError(f"{fn}: backend={backend!r}, expected one of {_BACKENDS}")
    supported = n_spatial <= 3 and t.dtype in _TRITON_DTYPES
    if backend == "triton":
        if not (t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            raise ValueError(f"{fn}: backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1), got {t.device}")
        if not supported:
            raise ValueError(f"{fn}: backend='triton' takes 1-3 spatial axes and a float dtype, got "
                             f"{n_spatial} axes and {t.dtype}")
        return True
    return backend == "auto" and t.is_cuda and supported


# ---- torch path ----

def _scan_torch(x: torch.Tensor, routes: tuple[Route, ...]) -> torch.Tensor:
    seqs = {}
    for order in dict.fromkeys(r.order for r in routes):
        seqs[order] = x.permute(0, 1, *[2 + a for a in order]).flatten(2)
    return torch.stack([seqs[r.order].flip(-1) if r.reverse else seqs[r.order] for r in routes], 1)


def _merge_torch(y: torch.Tensor, routes: tuple[Route, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    b, _, c, _ = y.shape
    per_order: dict[tuple[int, ...], torch.Tensor] = {}
    for k, r in enumerate(routes):  # routes sharing an order are summed before one un-permute
        seq = y[:, k].flip(-1) if r.reverse else y[:, k]
        per_order[r.order] = per_order[r.order] + seq if r.order in per_order else seq
    out = None
    for order, seq in per_order.items():
        inverse = [order.index(a) for a in range(len(order))]
        seq = seq.reshape(b, c, *[spatial[a] for a in order]).permute(0, 1, *[2 + i for i in inverse]).flatten(2)
        out = seq if out is None else out + seq
    return out


# ---- public API ----

def cross_scan(x: torch.Tensor, routes: Sequence[Route] | None = None, *, backend: str = "auto") -> torch.Tensor:
    """x (B, C, *spatial) -> (B, K, C, L), L = prod(spatial), K = len(routes); routes default to 2D/3D sets."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError(f"cross_scan: x has shape {tuple(getattr(x, 'shape', ()))}, expected (B, C, *spatial) "
                         f"with at least one spatial axis")
    spatial = tuple(x.shape[2:])
    routes = _check_routes(routes, len(spatial), "cross_scan")
    if _use_triton(x, len(spatial), backend, "cross_scan"):
        from medmamba.kernels.cross_scan_triton import cross_scan_triton
        return cross_scan_triton(x, routes)
    return _scan_torch(x, routes)


def cross_merge(y: torch.Tensor, routes: Sequence[Route] | None = None, spatial_shape: Sequence[int] | None = None,
                *, backend: str = "auto") -> torch.Tensor:
    """y (B, K, C, *spatial) or (B, K, C, L) with `spatial_shape` -> (B, C, L) in row-major order of x.

    y[:, k] is route k's output sequence in route k's order (merely reshaped when given spatially).
    """
    shape = tuple(getattr(y, "shape", ()))
    if not isinstance(y, torch.Tensor) or y.dim() < 4:
        raise ValueError(f"cross_merge: y has shape {shape}, expected (B, K, C, *spatial) or (B, K, C, L)")
    if spatial_shape is not None:
        spatial = tuple(int(s) for s in spatial_shape)
        if y.dim() == 4:
            if y.shape[3] != math.prod(spatial):
                raise ValueError(f"cross_merge: y has shape {shape}, expected (B, K, C, {math.prod(spatial)}) "
                                 f"for spatial_shape {spatial}")
        elif tuple(y.shape[3:]) != spatial:
            raise ValueError(f"cross_merge: y has shape {shape}, expected (B, K, C, *{spatial}) "
                             f"for spatial_shape {spatial}")
    elif y.dim() >= 5 or (routes is not None and y.dim() == 4 and all(len(Route(*r).order) == 1 for r in routes)):
        spatial = tuple(y.shape[3:])
    else:
        raise ValueError(f"cross_merge: y has shape {shape}, a flattened (B, K, C, L) input needs spatial_shape")
    routes = _check_routes(routes, len(spatial), "cross_merge")
    if y.shape[1] != len(routes):
        raise ValueError(f"cross_merge: y has shape {shape}, dim 1 must equal the number of routes {len(routes)}")
    y = y.reshape(*y.shape[:3], math.prod(spatial))
    if _use_triton(y, len(spatial), backend, "cross_merge"):
        from medmamba.kernels.cross_scan_triton import cross_merge_triton
        return cross_merge_triton(y, routes, spatial)
    return _merge_torch(y, routes, spatial)


def _check_ndim(t: torch.Tensor, ndim: int, name: str, expected: str, fn: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != ndim:
        raise ValueError(f"{fn}: {name} has shape {tuple(getattr(t, 'shape', ()))}, expected {expected}")


def cross_scan_2d(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, both reversed."""
    _check_ndim(x, 4, "x", "(B, C, H, W)", "cross_scan_2d")
    return cross_scan(x, ROUTES_2D, backend=backend)


def cross_merge_2d(y: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """(B, 4, C, H, W) -> (B, C, H*W), the adjoint of `cross_scan_2d`."""
    _check_ndim(y, 5, "y", "(B, 4, C, H, W)", "cross_merge_2d")
    return cross_merge(y, ROUTES_2D, backend=backend)


def cross_scan_3d(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """(B, C, D, H, W) -> (B, 6, C, D*H*W): axis orders (0,1,2), (1,2,0), (2,0,1), then each reversed."""
    _check_ndim(x, 5, "x", "(B, C, D, H, W)", "cross_scan_3d")
    return cross_scan(x, ROUTES_3D, backend=backend)


def cross_merge_3d(y: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """(B, 6, C, D, H, W) -> (B, C, D*H*W), the adjoint of `cross_scan_3d`."""
    _check_ndim(y, 6, "y", "(B, 6, C, D, H, W)", "cross_merge_3d")
    return cross_merge(y, ROUTES_3D, backend=backend)
