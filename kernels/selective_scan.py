"""Public selective scan: argument validation and backend dispatch (mamba_ssm `selective_scan_fn` semantics)."""
import os

import torch

from medmamba.kernels.selective_scan_torch import selective_scan_torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


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

    u, delta, z: (batch, dim, L); A: (dim, N) real; B, C: (batch, G, N, L) (channel d uses group d // (dim // G))
    or (batch, N, L) for G = 1; D, delta_bias: (dim,).
    delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias;
    h_t = exp(delta'_t A) h_{t-1} + delta'_t B_t u_t;  y_t = <C_t, h_t> + D u_t;  out = y * silu(z) if z is given.
    Returns out (batch, dim, L) in u's dtype and, with return_last_state, also h_L (batch, dim, N) in float32
    (float64 for float64 u). State and sums are float32 for fp16/bf16/fp32 inputs.
    backend: "torch" (chunked PyTorch, any device), "triton" (CUDA, or CPU under TRITON_INTERPRET=1),
    "auto" (triton for CUDA tensors when triton imports, torch otherwise).
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: backend={backend!r}; expected one of {BACKENDS}")
    B, C = _validate(u, delta, A, B, C, D, z, delta_bias)
    if backend == "auto":
        backend = "triton" if u.is_cuda and triton_available() else "torch"
    if backend == "triton":
        if not (u.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            raise ValueError(f"selective_scan: backend='triton' needs CUDA tensors (u is on {u.device}, shape "
                             f"{tuple(u.shape)}) or TRITON_INTERPRET=1")
        from medmamba.kernels.selective_scan_triton import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
