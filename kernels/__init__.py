"""Scan kernels (no nn.Modules): selective scan, cross-scan/merge, MHS-VM's gated route fusion and Mamba's causal
conv1d; Triton on CUDA, numba and PyTorch on the CPU, chosen in ``medmamba.kernels.backends``."""
from medmamba.kernels.causal_conv1d import causal_conv1d_silu, causal_conv1d_silu_ref
from medmamba.kernels.cross_scan import (
    cross_merge,
    cross_merge_2d,
    cross_merge_3d,
    cross_rescan,
    cross_scan,
    cross_scan_2d,
    cross_scan_3d,
    cross_unscan,
)
from medmamba.kernels.route_fusion import gated_route_fusion, gated_route_fusion_ref
from medmamba.kernels.routes import (
    MHS_PATTERNS,
    PATHS,
    ROUTES_2D,
    ROUTES_3D,
    PathRoute,
    Route,
    default_routes,
    mhs_routes,
    route_positions,
)
from medmamba.kernels.selective_scan import selective_scan
from medmamba.kernels.selective_scan_ref import selective_scan_ref

__all__ = [
    "selective_scan",
    "selective_scan_ref",
    "Route",
    "PathRoute",
    "PATHS",
    "ROUTES_2D",
    "ROUTES_3D",
    "MHS_PATTERNS",
    "default_routes",
    "mhs_routes",
    "route_positions",
    "cross_scan",
    "cross_merge",
    "cross_unscan",
    "cross_rescan",
    "cross_scan_2d",
    "cross_merge_2d",
    "cross_scan_3d",
    "cross_merge_3d",
    "gated_route_fusion",
    "gated_route_fusion_ref",
    "causal_conv1d_silu",
    "causal_conv1d_silu_ref",
]
