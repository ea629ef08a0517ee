"""Scan routes: orders in which a cross-scan visits the positions of an N-D grid.

Two kinds of route:

- ``Route(order, reverse)``: flatten the spatial axes in ``order`` (outermost first), optionally reversed; VMamba's
  cross-scan routes. They are the fast special case: permute / flip on the CPU, a fused tiled kernel on CUDA.
- ``PathRoute(path, reverse)``: any permutation of the grid positions, given by a path generator
  ``path(spatial) -> row-major index of each step``, either a registered name (see ``PATHS``) or a callable. The index
  array is computed once per spatial shape and cached.

MHS-VM's four scan patterns (Ji, arXiv 2406.05992, Fig. 2) are route sets of four sequences each: two routes and
their reverses, in the order ``[r0, r0 reversed, r1, r1 reversed]`` of the official implementation.

======== ======================================== ==============================================================
pattern  2D (h x w)                               3D (d x h x w) generalisation
======== ======================================== ==============================================================
C        snake rows; snake columns                snake with axis order (0, 1, 2); snake with (2, 1, 0): every
                                                  inner axis changes direction each time it restarts, so
                                                  consecutive steps are grid neighbours
X        anti-diagonals i + j = k, k = 0..h+w-2,  planes i + j + l = k, alternating direction (row-major order
         alternating direction (JPEG zigzag);     inside a plane, reversed on even k); mirrored along the last
         the same mirrored left-right             axis
S        clockwise spiral from the top-left       the 2D spiral in every slice, odd slices walked outwards, so the
         corner inwards; mirrored top-bottom      path steps from centre to centre; mirrored top-bottom per slice
Z        row-major raster; column-major raster    axis orders (0, 1, 2) and (2, 1, 0)
======== ======================================== ==============================================================
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Union

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensor


class Route(NamedTuple):
    """Spatial axes from outermost to innermost in the flattening; ``reverse`` flips the sequence."""

    order: tuple[int, ...]
    reverse: bool = False


PathFn = Callable[[tuple[int, ...]], Sequence[int]]


class PathRoute(NamedTuple):
    """A permutation of the grid positions: ``path`` names a generator in ``PATHS`` or is a callable
    ``(spatial shape) -> row-major index of each step``; ``reverse`` walks it backwards."""

    path: Union[str, PathFn]
    reverse: bool = False


AnyRoute = Union[Route, PathRoute]

ROUTES_2D: list[Route] = [Route((0, 1), False), Route((1, 0), False), Route((0, 1), True), Route((1, 0), True)]
_ORDERS_3D = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
ROUTES_3D: list[Route] = [Route(o, False) for o in _ORDERS_3D] + [Route(o, True) for o in _ORDERS_3D]


def default_routes(spatial_dims: int) -> list[Route]:
    """VMamba's cross-scan routes: 4 in 2D (rows, columns, both reversed), 6 in 3D (three axis orders, reversed).

    Args:
        spatial_dims: 2 or 3.

    Returns:
        A new list of ``Route``.
    """
    if spatial_dims == 2:
        return list(ROUTES_2D)
    if spatial_dims == 3:
        return list(ROUTES_3D)
    raise ValueError(f"default_routes: spatial_dims must be 2 or 3, not {spatial_dims}")


# ---- path generators: spatial shape -> row-major index of each step (int64 numpy array) ----

def snake(spatial: Sequence[int], order: Sequence[int] | None = None) -> np.ndarray:
    """Boustrophedon over the axes in ``order`` (outermost first; default row-major): an axis runs backwards
    whenever the count of completed runs of the axes outside it is odd, so consecutive steps are neighbours."""
    spatial = tuple(int(s) for s in spatial)
    order = tuple(range(len(spatial))) if order is None else tuple(order)
    sizes = [spatial[a] for a in order]
    step = np.arange(math.prod(spatial))
    coords = [None] * len(spatial)
    inner = math.prod(sizes)
    for axis, size in zip(order, sizes):
        inner //= size
        runs_outside = step // (inner * size)  # completed runs of this axis so far
        digit = (step // inner) % size
        coords[axis] = np.where(runs_outside % 2 == 1, size - 1 - digit, digit)
    return np.ravel_multi_index(coords, spatial)


def diagonal(spatial: Sequence[int]) -> np.ndarray:
    """Positions in order of the coordinate sum k; inside a diagonal (plane) in row-major order, reversed for even
    k. In 2D this is the JPEG zigzag: (0,0), (0,1), (1,0), (2,0), (1,1), (0,2), ..."""
    spatial = tuple(int(s) for s in spatial)
    raster = np.arange(math.prod(spatial))
    k = np.sum(np.unravel_index(raster, spatial), axis=0)
    within = np.where(k % 2 == 0, -raster, raster)
    return raster[np.lexsort((within, k))]


def _spiral_2d(h: int, w: int) -> np.ndarray:
    """Clockwise spiral from the top-left corner inwards, ring by ring."""
    rows, cols = [], []
    top, left, bottom, right = 0, 0, h - 1, w - 1
    while top <= bottom and left <= right:
        if top == bottom:  # one row left
            rows += [top] * (right - left + 1)
            cols += list(range(left, right + 1))
        elif left == right:  # one column left
            rows += list(range(top, bottom + 1))
            cols += [left] * (bottom - top + 1)
        else:
            rows += [top] * (right - left) + list(range(top, bottom)) + [bottom] * (right - left) \
                + list(range(bottom, top, -1))
            cols += list(range(left, right)) + [right] * (bottom - top) + list(range(right, left, -1)) \
                + [left] * (bottom - top)
        top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
    return np.asarray(rows, dtype=np.int64) * w + np.asarray(cols, dtype=np.int64)


def spiral(spatial: Sequence[int]) -> np.ndarray:
    """2D: clockwise spiral from the top-left corner inwards. N-D: that spiral over the last two axes in every
    slice, slices in row-major order, every other slice walked from the centre outwards."""
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) == 1:
        return np.arange(spatial[0])
    h, w = spatial[-2:]
    plane = _spiral_2d(h, w)
    slices = math.prod(spatial[:-2])
    return np.concatenate([s * h * w + (plane[::-1] if s % 2 else plane) for s in range(slices)])


def mirrored(path: PathFn, axis: int) -> PathFn:
    """``path`` reflected along ``axis`` (negative counts from the last axis)."""

    def mirrored_path(spatial: Sequence[int]) -> np.ndarray:
        spatial = tuple(int(s) for s in spatial)
        coords = list(np.unravel_index(np.asarray(path(spatial)), spatial))
        coords[axis] = spatial[axis] - 1 - coords[axis]
        return np.ravel_multi_index(coords, spatial)

    return mirrored_path


def _reversed_axes_snake(spatial: Sequence[int]) -> np.ndarray:
    return snake(spatial, tuple(reversed(range(len(spatial)))))


PATHS: dict[str, PathFn] = {
    "snake": snake,  # 2D: snake rows
    "snake_reversed_axes": _reversed_axes_snake,  # 2D: snake columns
    "diagonal": diagonal,
    "diagonal_mirrored": mirrored(diagonal, -1),  # left-right
    "spiral": spiral,
    "spiral_mirrored": mirrored(spiral, -2),  # top-bottom
}


def _pattern_routes(first: AnyRoute, second: AnyRoute) -> list[AnyRoute]:
    return [first, first._replace(reverse=True), second, second._replace(reverse=True)]


MHS_PATTERNS = ("C", "X", "S", "Z")


def mhs_routes(pattern: str, spatial_dims: int) -> list[AnyRoute]:
    """The four sequences MHS-VM scans for one pattern: ``[r0, r0 reversed, r1, r1 reversed]``.

    Args:
        pattern: "C" (continuous), "X" (diagonal), "S" (spiral) or "Z" (zigzag); see the module docstring.
        spatial_dims: 2 or 3 (any N >= 2 works; 3D is the documented generalisation).

    Returns:
        A list of four routes.
    """
    if spatial_dims < 2:
        raise ValueError(f"mhs_routes: spatial_dims must be 2 or more, not {spatial_dims}")
    axes = tuple(range(spatial_dims))
    if pattern == "C":
        return _pattern_routes(PathRoute("snake"), PathRoute("snake_reversed_axes"))
    if pattern == "X":
        return _pattern_routes(PathRoute("diagonal"), PathRoute("diagonal_mirrored"))
    if pattern == "S":
        return _pattern_routes(PathRoute("spiral"), PathRoute("spiral_mirrored"))
    if pattern == "Z":
        return _pattern_routes(Route(axes), Route(axes[::-1]))
    raise ValueError(f"mhs_routes: pattern must be one of {MHS_PATTERNS}, not {pattern!r}")


# ---- validation and index arrays ----

def check_routes(routes: Sequence | None, n_spatial: int, fn: str) -> tuple[AnyRoute, ...]:
    """Normalise ``routes`` (None: the default set; plain ``(order, reverse)`` tuples become ``Route``) or raise a
    ValueError naming ``fn`` and the bad route."""
    if routes is None:
        if n_spatial in (2, 3):
            return tuple(default_routes(n_spatial))
        raise ValueError(f"{fn}: routes=None has a default only for 2 or 3 spatial axes, got {n_spatial}")
    checked: list[AnyRoute] = []
    for route in routes:
        if isinstance(route, PathRoute):
            if not (callable(route.path) or route.path in PATHS):
                raise ValueError(f"{fn}: path {route.path!r} is neither a callable nor one of {sorted(PATHS)}")
            checked.append(PathRoute(route.path, bool(route.reverse)))
            continue
        order, reverse = route
        order = tuple(int(a) for a in order)
        if sorted(order) != list(range(n_spatial)):
            raise ValueError(f"{fn}: route order {order} is not a permutation of the {n_spatial} spatial axes "
                             f"{tuple(range(n_spatial))}")
        checked.append(Route(order, bool(reverse)))
    if not checked:
        raise ValueError(f"{fn}: routes is empty")
    return tuple(checked)


@functools.lru_cache(maxsize=256)
def route_positions(route: AnyRoute, spatial: tuple[int, ...]) -> np.ndarray:
    """Row-major index of the grid position at each step of ``route`` (read-only int64 array; cached).

    Args:
        route: a ``Route`` or ``PathRoute``.
        spatial: the grid's shape.

    Returns:
        An array of ``prod(spatial)`` distinct indices.
    """
    spatial = tuple(int(s) for s in spatial)
    length = math.prod(spatial)
    if isinstance(route, PathRoute):
        fn = PATHS[route.path] if isinstance(route.path, str) else route.path
        steps = np.asarray(fn(spatial), dtype=np.int64).reshape(-1)
        if steps.shape != (length,) or not np.array_equal(np.sort(steps), np.arange(length)):
            raise ValueError(f"path {route.path!r} is not a permutation of the {length} positions of a "
                             f"{'x'.join(map(str, spatial))} grid")
    else:
        steps = np.arange(length).reshape(spatial).transpose(route.order).reshape(-1)
    steps = np.ascontiguousarray(steps[::-1] if route.reverse else steps)
    steps.setflags(write=False)
    return steps


_INDEX_TENSORS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _index_tensors(routes: tuple[AnyRoute, ...], spatial: tuple[int, ...], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    positions = np.stack([route_positions(r, spatial) for r in routes])
    inverse = np.empty_like(positions)
    np.put_along_axis(inverse, positions, np.arange(positions.shape[1])[None].repeat(len(routes), 0), axis=1)
    return (torch.from_numpy(positions).to(device=device, dtype=dtype),
            torch.from_numpy(inverse).to(device=device, dtype=dtype))


def route_index_tensors(routes: Sequence[AnyRoute], spatial: Sequence[int], device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positions, inverse)``, each (K, L): step p of route k visits row-major position ``positions[k, p]``, and
    position q is step ``inverse[k, q]`` of route k. Cached per routes, shape, device and dtype (no host sync after
    the first call).
    """
    key = (tuple(routes), tuple(int(s) for s in spatial), torch.device(device), dtype)
    if key in _INDEX_TENSORS:
        return _INDEX_TENSORS[key]
    tensors = _index_tensors(*key)
    # made while torch.export / compile trace (fake tensors) they are the trace's, not to be reused eagerly
    if not any(isinstance(t, FakeTensor) for t in tensors):
        _INDEX_TENSORS[key] = tensors
    return tensors
