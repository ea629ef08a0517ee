"""Scan routes for the blocks: the kernels' routes and cross-scan functions, re-exported."""
from medmamba.kernels import (
    PathRoute,
    Route,
    cross_merge,
    cross_rescan,
    cross_scan,
    cross_unscan,
    default_routes,
    mhs_routes,
)

__all__ = ["Route", "PathRoute", "cross_scan", "cross_merge", "cross_unscan", "cross_rescan",
           "default_routes", "mhs_routes"]
