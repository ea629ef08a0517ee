"""Scan routes for the blocks: the kernels' cross-scan routes per spatial dims."""
from __future__ import annotations

from medmamba.kernels.cross_scan import ROUTES_2D, ROUTES_3D, Route, cross_merge, cross_scan

__all__ = ["Route", "cross_scan", "cross_merge", "default_routes"]


def default_routes(spatial_dims: int) -> list[Route]:
    """All routes of the kernels' cross-scan: 4 in 2D (VMamba), 6 in 3D."""
    if spatial_dims == 2:
        return list(ROUTES_2D)
    if spatial_dims == 3:
        return list(ROUTES_3D)
    raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
