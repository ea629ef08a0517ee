"""MHS-VM's gated fusion unit as a kernel: route outputs (B, R, C, L) -> (B, C, L), their sum weighted per position
and channel by ReLU(cv - threshold), cv the coefficient of variation across the routes (unbiased standard
deviation over the mean of the outputs shifted by their minimum).

``gated_route_fusion_ref`` is the formula in torch ops (any device, autograd by torch). ``gated_route_fusion`` runs
the numba kernels on the CPU (``route_fusion_numba``: one pass forward, one backward, instead of about twenty
elementwise passes each way) as the operator ``torch.ops.medmamba.gated_route_fusion``, and the reference
elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medmamba.kernels.backends import resolve_backend


def gated_route_fusion_ref(ys: torch.Tensor, threshold: float = 0.0, eps: float = 1e-5) -> torch.Tensor:
    """The gated fusion in torch ops (see the module docstring); arguments as ``gated_route_fusion``."""
    # elementwise over the R route maps: torch's std/amin reduce a strided axis 20x slower
    routes = ys.unbind(1)
    total, low = routes[0], routes[0]
    for y in routes[1:]:
        total, low = total + y, torch.minimum(low, y)
    mean = total / len(routes)
    std = (sum((y - mean).square() for y in routes) / (len(routes) - 1)).sqrt()
    return total * F.relu(std / (mean - low + eps) - threshold)


@torch.library.custom_op("medmamba::gated_route_fusion", mutates_args=())
def _fusion_op(ys: Tensor, threshold: float, eps: float) -> Tensor:
    from medmamba.kernels.route_fusion_numba import gated_route_fusion_numba_fwd

    return gated_route_fusion_numba_fwd(ys, threshold, eps)


@_fusion_op.register_fake
def _(ys, threshold, eps):
    return ys.new_empty(ys.shape[0], *ys.shape[2:])


@torch.library.custom_op("medmamba::gated_route_fusion_backward", mutates_args=())
def _fusion_backward_op(ys: Tensor, grad: Tensor, threshold: float, eps: float) -> Tensor:
    from medmamba.kernels.route_fusion_numba import gated_route_fusion_numba_bwd

    return gated_route_fusion_numba_bwd(ys, grad, threshold, eps)


@_fusion_backward_op.register_fake
def _(ys, grad, threshold, eps):
    return torch.empty_like(ys)


def _setup_context(ctx, inputs, output):
    ys, ctx.threshold, ctx.eps = inputs
    ctx.save_for_backward(ys)


def _backward(ctx, grad):
    (ys,) = ctx.saved_tensors
    return torch.ops.medmamba.gated_route_fusion_backward(ys, grad, ctx.threshold, ctx.eps), None, None


_fusion_op.register_autograd(_backward, setup_context=_setup_context)


def gated_route_fusion(ys: torch.Tensor, threshold: float = 0.0, eps: float = 1e-5, *,
                       backend: str = "auto") -> torch.Tensor:
    """Fuse route outputs as MHS-VM's gated fusion unit.

    Args:
        ys: (B, R, C, L) route outputs, R >= 2, each in row-major order of the grid (``cross_unscan``).
        threshold: t of ReLU(cv - t), MHS-VM's ``gfu_t``.
        eps: added to the shifted mean.
        backend: "auto" (numba for CPU tensors when it imports, else torch), "numba" or "torch".

    Returns:
        (B, C, L) in ys's dtype. The numba kernels compute in float32 (float64 for float64 ys); their gradient sends
        a tie for the minimum to the first route holding it, and takes the standard deviation's term as 0 where all
        routes are equal (torch's autograd of the reference gives NaN there).
    """
    if not isinstance(ys, torch.Tensor) or ys.dim() != 4 or ys.shape[1] < 2:
        raise ValueError(f"gated_route_fusion: ys has shape {tuple(getattr(ys, 'shape', ()))}, expected "
                         f"(B, R, C, L) with R >= 2 routes")
    chosen = resolve_backend("route_fusion", backend, ys.device, supported_by_triton=False,
                             what=f"a {ys.dtype} tensor; numba takes a float dtype",
                             caller="gated_route_fusion", supported_by_numba=ys.dtype.is_floating_point)
    if chosen == "numba":
        return torch.ops.medmamba.gated_route_fusion(ys, float(threshold), float(eps))
    return gated_route_fusion_ref(ys, threshold, eps)
