"""Public selective scan: argument validation, backend choice, and the ``medmamba::selective_scan`` operator.

Every call goes through the torch operator ``torch.ops.medmamba.selective_scan`` (``torch.library.custom_op``): one
opaque node for ``torch.compile`` and ``torch.export``, with a fake implementation for shapes, autograd through
``torch.ops.medmamba.selective_scan_backward``, and a FLOP formula for ``FlopCounterMode``. The operator returns
(out, last state, saved): ``saved`` is what the backend keeps for backward (empty without gradients).
"""
from __future__ import annotations

from importlib import import_module
from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from medmamba.kernels.backends import OPS, resolve_backend

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MODULES = {name: f"medmamba.kernels.selective_scan_{name}" for name in OPS["selective_scan"]}


def _check(name, t, expected_shape, device, shape_text):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"selective_scan: {name} must be a torch.Tensor of shape {shape_text}, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"selective_scan: {name} has dtype {t.dtype} (shape {tuple(t.shape)}); expected a real "
                         f"floating dtype (float32, float16, bfloat16 or float64) and shape {shape_text}")
    if tuple(t.shape) != tuple(expected_shape):
        raise ValueError(f"selective_scan: {name} has shape {tuple(t.shape)}; expected {shape_text} "
                         f"= {tuple(expected_shape)}")
    if t.device != device:
        raise ValueError(f"selective_scan: {name} (shape {tuple(t.shape)}) is on {t.device}; expected {device} "
                         f"like u")


def _validate(u, delta, A, B, C, D, z, delta_bias):
    """Check every argument; return B and C as (batch, G, N, L)."""
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"selective_scan: u has shape {shape}; expected (batch, dim, L)")
    batch, dim, L = u.shape
    if L == 0 or dim == 0 or batch == 0:
        raise ValueError(f"selective_scan: u has shape {tuple(u.shape)}; expected non-empty (batch, dim, L)")
    device = u.device
    _check("u", u, u.shape, device, "(batch, dim, L)")
    _check("delta", delta, u.shape, device, "(batch, dim, L) like u")
    if not isinstance(A, torch.Tensor) or A.dim() != 2:
        shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"selective_scan: A has shape {shape}; expected (dim, N) = ({dim}, N)")
    N = A.shape[1]
    _check("A", A, (dim, N), device, "(dim, N)")
    bc = []
    for name, t in (("B", B), ("C", C)):
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            _check(name, t, (batch, N, L), device, "(batch, N, L) or (batch, G, N, L)")
            t = t[:, None]
        elif isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[1] > 0 and dim % t.shape[1] == 0:
            _check(name, t, (batch, t.shape[1], N, L), device, "(batch, G, N, L) with dim divisible by G")
        else:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"selective_scan: {name} has shape {shape}; expected (batch, N, L) = "
                             f"({batch}, {N}, {L}) or (batch, G, N, L) = ({batch}, G, {N}, {L}) with G dividing "
                             f"dim={dim}")
        bc.append(t)
    B, C = bc
    if B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B has shape {tuple(B.shape)} and C {tuple(C.shape)}; expected the same "
                         f"number of groups G")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _check(name, t, (dim,), device, "(dim,)")
    if z is not None:
        _check("z", z, u.shape, device, "(batch, dim, L) like u")
    return B, C


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """Selective scan with mamba_ssm `selective_scan_fn` semantics.

    delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias;
    h_t = exp(delta'_t A) h_{t-1} + delta'_t B_t u_t;  y_t = <C_t, h_t> + D u_t;  out = y * silu(z) if z is given.
    State and sums are float32 for fp16/bf16/fp32 inputs, float64 for float64 inputs.

    Args:
        u, delta: (batch, dim, L).
        A: (dim, N) real.
        B, C: (batch, G, N, L), channel d using group d // (dim // G); or (batch, N, L) for G = 1.
        D, delta_bias: optional (dim,).
        z: optional (batch, dim, L) gate.
        delta_softplus: apply softplus to delta + delta_bias.
        return_last_state: also return h_L.
        backend: "numba" (fused CPU kernels), "torch" (chunked PyTorch, any device), "triton" (CUDA, or CPU under
            TRITON_INTERPRET=1), or "auto": triton for CUDA tensors when triton imports, numba on the CPU when it
            imports, torch otherwise (``medmamba.kernels.backends``).

    Returns:
        out (batch, dim, L) in u's dtype and, with return_last_state, also h_L (batch, dim, N) in float32
        (float64 for float64 u).
    """
    B, C = _validate(u, delta, A, B, C, D, z, delta_bias)
    backend = resolve_backend("selective_scan", backend, u.device, what=f"u (shape {tuple(u.shape)})")
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (u, delta, A, B, C, D, z, delta_bias))
    out, last, _ = torch.ops.medmamba.selective_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                     backend, save)
    return (out, last) if return_last_state else out


def _backend(name: str):
    return import_module(_MODULES[name])


@torch.library.custom_op("medmamba::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, backend: str,
                       save_for_backward: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(out, last state, saved for backward) of validated inputs (B, C (batch, G, N, L)) on a named backend."""
    return getattr(_backend(backend), f"selective_scan_{backend}_fwd")(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_for_backward)


def saved_shape(backend: str, batch: int, dim: int, L: int, N: int, G: int) -> tuple[int, ...]:
    """Shape of what ``backend`` keeps for backward."""
    if backend == "torch":
        return _backend("torch").states_shape(batch, dim, L, N, G)
    return _backend(backend).checkpoint_shape(batch, dim, L, N)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, save_for_backward):
    batch, dim, L = u.shape
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    saved = saved_shape(backend, batch, dim, L, A.shape[1], B.shape[1]) if save_for_backward else (0,)
    return (torch.empty(u.shape, dtype=u.dtype, device=u.device),
            torch.empty(batch, dim, A.shape[1], dtype=compute, device=u.device),
            torch.empty(saved, dtype=compute, device=u.device))


@torch.library.custom_op("medmamba::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                                z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, backend: str,
                                saved: Tensor, dout: Optional[Tensor], dlast: Optional[Tensor]) -> list[Tensor]:
    """Gradients of (u, delta, A, B, C, D, z, delta_bias); an empty tensor stands for an absent input's."""
    grads = getattr(_backend(backend), f"selective_scan_{backend}_bwd")(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, saved, dout, dlast)
    return [g if g is not None else torch.empty(0, dtype=u.dtype, device=u.device) for g in grads]


@_selective_scan_backward_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, saved, dout, dlast):
    return [torch.empty_like(t) if t is not None else torch.empty(0, dtype=u.dtype, device=u.device)
            for t in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend, _ = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.delta_softplus, ctx.backend = delta_softplus, backend


def _backward(ctx, dout, dlast, _):
    u, delta, A, B, C, D, z, delta_bias, saved = ctx.saved_tensors
    grads = torch.ops.medmamba.selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus,
                                                       ctx.backend, saved, dout, dlast)
    grads = [g if t is not None else None for g, t in zip(grads, (u, delta, A, B, C, D, z, delta_bias))]
    return (*grads, None, None, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_flops(u_shape, A_shape, has_D: bool = False, has_z: bool = False, has_delta_bias: bool = False,
                         delta_softplus: bool = False) -> int:
    """FLOPs of one selective scan, u (b, d, L) and A (d, N), counting every operation once (exp as one)::

        8 * b*d*N*L      per state element and step: delta*A (1), exp (1), delta*B*u (2),
                         h = dA*h + dBu (2), y += h*C (2)
      + 2 * b*d*L        if D is given: y += D*u
      + 2 * b*d*L        if delta_bias / delta_softplus: add bias (1), softplus (1)
      + 2 * b*d*L        if z is given: y *= silu(z) (silu 1, multiply 1)

    (mamba_ssm and VMamba count ``9*b*d*N*L`` for the same recurrence.)
    """
    b, d, length = u_shape
    n = A_shape[-1]
    per_channel_step = 2 * (int(has_D) + int(has_delta_bias or delta_softplus) + int(has_z))
    return 8 * b * d * n * length + per_channel_step * b * d * length


@register_flop_formula(torch.ops.medmamba.selective_scan)
def _selective_scan_flop(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape, delta_bias_shape,
                         delta_softplus, *args, **kwargs) -> int:
    return selective_scan_flops(u_shape, A_shape, D_shape is not None, z_shape is not None,
                                delta_bias_shape is not None, delta_softplus)
