"""Cross-scan, cross-merge, cross-unscan and cross-rescan: a (B, C, *spatial) map as K route sequences, and back.

``cross_scan`` lays the map out along each route (see ``medmamba.kernels.routes``: axis-order routes and
permutation routes); ``cross_unscan`` puts each route's sequence back in row-major order; ``cross_merge`` sums
those, and is the exact adjoint of ``cross_scan``: <cross_scan(x), y> == <x, cross_merge(y)>; ``cross_rescan``
lays K maps out each along its own route (the inverse and adjoint of ``cross_unscan``). All are differentiable.
On CUDA, Triton kernels do each but the rescan in one pass (``cross_scan_triton``: a fused tiled kernel for axis
routes, index gathers for the rest); on the CPU numba kernels do (``cross_scan_numba``: one pass through the
cached index arrays, for every kind of route), as the operator ``torch.ops.medmamba.route_pass`` (opaque to
``torch.compile`` and ``torch.export``); the torch path (permute / flip for axis routes, ``torch.gather`` with the
index arrays once any permutation route is present) runs everywhere else. Multi-head scans (MHS-VM) call
``cross_scan(x[:, head_channels], head_routes)`` per head: the Triton path reads such a channel slice in place.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from medmamba.kernels.backends import resolve_backend
from medmamba.kernels.routes import ROUTES_2D, ROUTES_3D, AnyRoute, Route, check_routes, route_index_tensors

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _resolve(t: torch.Tensor, n_spatial: int, backend: str, fn: str, triton: bool = True) -> str:
    """The backend for ``fn``; ``triton=False`` for a pass without a Triton kernel (torch runs it on CUDA)."""
    what = (f"a {t.dtype} tensor with {n_spatial} spatial axes; Triton takes 1-3 spatial axes and a float dtype"
            f"{'' if triton else ' (and has no kernel for this pass)'}, numba a float dtype")
    return resolve_backend("cross_scan", backend, t.device, triton and n_spatial <= 3 and t.dtype in _TRITON_DTYPES,
                           what, caller=fn, supported_by_numba=t.dtype.is_floating_point)


# ---- torch path ----
# A route is its forward sequence (an axis order's permute, or a path's gather), maybe flipped: routes sharing a
# forward sequence are scanned once, and summed before one un-permute when merged.

def _forward(route: AnyRoute) -> AnyRoute:
    return route._replace(reverse=False)


def _along(flat: torch.Tensor, route: AnyRoute, spatial: tuple[int, ...], inverse: bool) -> torch.Tensor:
    """(B, C, L) in row-major order -> along the forward ``route`` (or back, with ``inverse``)."""
    b, c, length = flat.shape
    if isinstance(route, Route):
        order = route.order
        if inverse:
            back = [order.index(a) for a in range(len(order))]
            return flat.reshape(b, c, *[spatial[a] for a in order]).permute(0, 1, *[2 + i for i in back]).flatten(2)
        return flat.reshape(b, c, *spatial).permute(0, 1, *[2 + a for a in order]).flatten(2)
    positions, inverses = route_index_tensors([route], spatial, flat.device)
    index = inverses if inverse else positions
    return torch.gather(flat, 2, index.view(1, 1, length).expand(b, c, length))


def _scan_torch(x: torch.Tensor, routes: tuple[AnyRoute, ...]) -> torch.Tensor:
    spatial = tuple(x.shape[2:])
    flat = x.flatten(2)
    seqs = {f: _along(flat, f, spatial, inverse=False) for f in dict.fromkeys(map(_forward, routes))}
    return torch.stack([seqs[_forward(r)].flip(-1) if r.reverse else seqs[_forward(r)] for r in routes], 1)


def _unscan_torch(y: torch.Tensor, routes: tuple[AnyRoute, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([_along(y[:, k].flip(-1) if r.reverse else y[:, k], _forward(r), spatial, inverse=True)
                        for k, r in enumerate(routes)], 1)


def _rescan_torch(y: torch.Tensor, routes: tuple[AnyRoute, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    seqs = [_along(y[:, k], _forward(r), spatial, inverse=False) for k, r in enumerate(routes)]
    return torch.stack([seq.flip(-1) if r.reverse else seq for seq, r in zip(seqs, routes)], 1)


def _merge_torch(y: torch.Tensor, routes: tuple[AnyRoute, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    per_forward: dict[AnyRoute, torch.Tensor] = {}
    for k, r in enumerate(routes):
        seq = y[:, k].flip(-1) if r.reverse else y[:, k]
        f = _forward(r)
        per_forward[f] = per_forward[f] + seq if f in per_forward else seq
    out = None
    for f, seq in per_forward.items():
        seq = _along(seq, f, spatial, inverse=True)
        out = seq if out is None else out + seq
    return out


# ---- numba path: one operator for the four passes through the routes' positions ----
_ADJOINT = {"scan": "merge", "merge": "scan", "unscan": "rescan", "rescan": "unscan"}


@torch.library.custom_op("medmamba::route_pass", mutates_args=())
def _route_pass_op(src: Tensor, positions: Tensor, mode: str) -> Tensor:
    """``route_pass_numba(src, positions, mode)``, differentiable: the adjoint pass runs backward."""
    from medmamba.kernels.cross_scan_numba import route_pass_numba

    return route_pass_numba(src, positions, mode)


@_route_pass_op.register_fake
def _(src, positions, mode):
    if mode == "scan":
        return src.new_empty(src.shape[0], positions.shape[0], *src.shape[1:])
    return src.new_empty(src.shape[0], *src.shape[2:]) if mode == "merge" else torch.empty_like(src)


def _route_pass_setup(ctx, inputs, output):
    _, positions, ctx.mode = inputs
    ctx.save_for_backward(positions)


def _route_pass_backward(ctx, grad):
    (positions,) = ctx.saved_tensors
    return torch.ops.medmamba.route_pass(grad, positions, _ADJOINT[ctx.mode]), None, None


_route_pass_op.register_autograd(_route_pass_backward, setup_context=_route_pass_setup)


def _pass_numba(src: torch.Tensor, routes: tuple[AnyRoute, ...], spatial: tuple[int, ...], mode: str):
    positions, _ = route_index_tensors(routes, spatial, src.device, torch.int32)
    return torch.ops.medmamba.route_pass(src, positions, mode)


# ---- public API ----

def cross_scan(x: torch.Tensor, routes: Sequence[AnyRoute] | None = None, *, backend: str = "auto") -> torch.Tensor:
    """Lay a map out along each route.

    Args:
        x: (B, C, *spatial) map, any number of spatial axes.
        routes: ``Route`` / ``PathRoute`` list (plain ``(order, reverse)`` tuples are read as ``Route``); None: the
            default set for 2 or 3 spatial axes (``default_routes``).
        backend: "auto" (Triton for CUDA tensors when it imports, numba for CPU tensors when it imports, else
            torch), "torch", "numba" or "triton".

    Returns:
        (B, K, C, L) with K = len(routes), L = prod(spatial): sequence k is x visited along route k.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError(f"cross_scan: x has shape {tuple(getattr(x, 'shape', ()))}, expected (B, C, *spatial) "
                         f"with at least one spatial axis")
    spatial = tuple(x.shape[2:])
    routes = check_routes(routes, len(spatial), "cross_scan")
    chosen = _resolve(x, len(spatial), backend, "cross_scan")
    if chosen == "triton":
        from medmamba.kernels.cross_scan_triton import cross_scan_triton
        return cross_scan_triton(x, routes)
    return _pass_numba(x.flatten(2), routes, spatial, "scan") if chosen == "numba" else _scan_torch(x, routes)


def _route_outputs(y, routes, spatial_shape, fn: str) -> tuple[torch.Tensor, tuple[AnyRoute, ...], tuple[int, ...]]:
    """Validate y of cross_merge / cross_unscan; return it as (B, K, C, L), the routes and the spatial shape."""
    shape = tuple(getattr(y, "shape", ()))
    if not isinstance(y, torch.Tensor) or y.dim() < 4:
        raise ValueError(f"{fn}: y has shape {shape}, expected (B, K, C, *spatial) or (B, K, C, L)")
    one_axis_routes = routes is not None and any(not hasattr(r, "path") and len(r[0]) == 1 for r in routes)
    if spatial_shape is not None:
        spatial = tuple(int(s) for s in spatial_shape)
        if y.dim() == 4:
            if y.shape[3] != math.prod(spatial):
                raise ValueError(f"{fn}: y has shape {shape}, expected (B, K, C, {math.prod(spatial)}) "
                                 f"for spatial_shape {spatial}")
        elif tuple(y.shape[3:]) != spatial:
            raise ValueError(f"{fn}: y has shape {shape}, expected (B, K, C, *{spatial}) "
                             f"for spatial_shape {spatial}")
    elif y.dim() >= 5 or (y.dim() == 4 and one_axis_routes):
        spatial = tuple(y.shape[3:])
    else:
        raise ValueError(f"{fn}: y has shape {shape}, a flattened (B, K, C, L) input needs spatial_shape")
    routes = check_routes(routes, len(spatial), fn)
    if y.shape[1] != len(routes):
        raise ValueError(f"{fn}: y has shape {shape}, dim 1 must equal the number of routes {len(routes)}")
    return y.reshape(*y.shape[:3], math.prod(spatial)), routes, spatial


def cross_merge(y: torch.Tensor, routes: Sequence[AnyRoute] | None = None, spatial_shape: Sequence[int] | None = None,
                *, backend: str = "auto") -> torch.Tensor:
    """Sum the routes' sequences back on the grid: the adjoint of ``cross_scan``.

    Args:
        y: (B, K, C, *spatial), or (B, K, C, L) with ``spatial_shape``: y[:, k] is route k's sequence in route k's
            order (merely reshaped when given spatially).
        routes: as for ``cross_scan``.
        spatial_shape: the grid's shape when y is flattened.
        backend: as for ``cross_scan``.

    Returns:
        (B, C, L) in row-major order of the grid.
    """
    y, routes, spatial = _route_outputs(y, routes, spatial_shape, "cross_merge")
    chosen = _resolve(y, len(spatial), backend, "cross_merge")
    if chosen == "triton":
        from medmamba.kernels.cross_scan_triton import cross_merge_triton
        return cross_merge_triton(y, routes, spatial)
    return _pass_numba(y, routes, spatial, "merge") if chosen == "numba" else _merge_torch(y, routes, spatial)


def cross_unscan(y: torch.Tensor, routes: Sequence[AnyRoute] | None = None,
                 spatial_shape: Sequence[int] | None = None, *, backend: str = "auto") -> torch.Tensor:
    """Each route's sequence back in row-major order, not summed (for fusions that weigh the routes, as MHS-VM's).

    Args:
        y, routes, spatial_shape, backend: as for ``cross_merge``.

    Returns:
        (B, K, C, L): ``cross_unscan(cross_scan(x))[:, k]`` is x flattened row-major, for every k.
    """
    y, routes, spatial = _route_outputs(y, routes, spatial_shape, "cross_unscan")
    chosen = _resolve(y, len(spatial), backend, "cross_unscan")
    if chosen == "triton":
        from medmamba.kernels.cross_scan_triton import cross_unscan_triton
        return cross_unscan_triton(y, routes, spatial)
    return _pass_numba(y, routes, spatial, "unscan") if chosen == "numba" else _unscan_torch(y, routes, spatial)


def cross_rescan(y: torch.Tensor, routes: Sequence[AnyRoute] | None = None,
                 spatial_shape: Sequence[int] | None = None, *, backend: str = "auto") -> torch.Tensor:
    """Map k laid out along route k: the inverse of ``cross_unscan``, and its adjoint. For per-route maps computed
    on the grid, as the per-route projections of a state-space block (one matmul on the grid instead of K on
    routed copies). No Triton kernel: on CUDA ``auto`` runs the torch path.

    Args:
        y: (B, K, C, *spatial), or (B, K, C, L) with ``spatial_shape``: y[:, k] a map in row-major order.
        routes, spatial_shape, backend: as for ``cross_merge`` ("triton" is refused).

    Returns:
        (B, K, C, L): sequence k is map k visited along route k; ``cross_rescan(cross_unscan(y)) == y``.
    """
    y, routes, spatial = _route_outputs(y, routes, spatial_shape, "cross_rescan")
    chosen = _resolve(y, len(spatial), backend, "cross_rescan", triton=False)
    return _pass_numba(y, routes, spatial, "rescan") if chosen == "numba" else _rescan_torch(y, routes, spatial)


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
