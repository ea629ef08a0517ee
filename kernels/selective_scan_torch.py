"""Chunked selective scan in pure PyTorch: differentiable by autograd, no Python loop over time steps.

Within a chunk of T steps the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t is solved in closed form with
s_t = cumsum(dt)_t (chunk-local):

    h_t = exp(A s_t) h_0 + sum_{r<=t} exp(A (s_t - s_r)) B_r dt_r u_r
        = P_t * (exp(A c) h_0 + cumsum_r(Q_r B_r dt_r u_r)),   P = exp(A (s - c)), Q = exp(-A (s - c)),

where c is the middle of the chunk's range of s, so P and Q stay within exp(+-limit / 2). A chunk whose
|A| * range(s) exceeds the limit (RANGE_LIMIT of the compute dtype) is split in halves (down to single steps,
where the formula is exact), so the result is always finite where the true recurrence is. The state is carried
across chunks by a Python loop over chunks (never over time steps).
Inputs are expected already validated and normalised by `medmamba.kernels.selective_scan`.
"""
import torch

CHUNK_SIZE = 64
# max |A| * (max s - min s) inside one chunk: P, Q <= exp(limit / 2), leaving headroom below the dtype's overflow
RANGE_LIMIT = {torch.float32: 160.0, torch.float64: 1000.0}


def _scan_chunk(dt, x, A, B, C, h):
    """One chunk. dt, x=dt*u: (b, G, dg, T); A: (G, dg, N); B, C: (b, G, N, T); h: (b, G, dg, N) state before."""
    s = dt.cumsum(-1)
    center = ((s.amax(-1, keepdim=True) + s.amin(-1, keepdim=True)) / 2).detach()
    log_P = (s - center)[..., None, :] * A[..., None]
    P = log_P.exp()
    W = (B[:, :, None] * x[..., None, :]) * (-log_P).exp()  # not 1 / P: its gradient -1 / P^2 would overflow
    W[..., 0] += h * (A * center).exp()  # the carried-in state enters with the first step
    H = P * W.cumsum(-1)
    return (H * C[:, :, None]).sum(-2), H[..., -1]


def _chunk_range(dt, A_absmax):
    """max over batch and channels of |A| * range(chunk-local cumsum of dt); dt: (b, G, dg, T)."""
    s = dt.detach().cumsum(-1)
    return float(((s.amax(-1) - s.amin(-1)) * A_absmax).amax())


def _scan_span(dt, x, A, B, C, h, A_absmax, span_range=None):
    """Scan one span, splitting it while its decay range is too wide for the closed form. Returns ([y], h)."""
    T = dt.shape[-1]
    if span_range is None:
        span_range = _chunk_range(dt, A_absmax)
    if span_range <= RANGE_LIMIT[dt.dtype] or T == 1:
        y, h = _scan_chunk(dt, x, A, B, C, h)
        return [y], h
    half = T // 2
    ys, h = _scan_span(dt[..., :half], x[..., :half], A, B[..., :half], C[..., :half], h, A_absmax)
    ys2, h = _scan_span(dt[..., half:], x[..., half:], A, B[..., half:], C[..., half:], h, A_absmax)
    return ys + ys2, h


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, chunk_size=CHUNK_SIZE):
    """mamba_ssm `selective_scan_fn` semantics; B, C must be 4-D (batch, G, N, L). fp32 math (fp64 for fp64 u)."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, d, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dg = d // G
    u_f = u.to(compute)
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    x = (dt * u_f).view(b, G, dg, L)
    dt = dt.view(b, G, dg, L)
    A_g = A.to(compute).view(G, dg, N)
    B_f, C_f = B.to(compute), C.to(compute)
    A_absmax = A_g.detach().abs().amax(-1)

    # decay range of every chunk at once (one host sync), so the common case never re-checks
    n_chunks = -(-L // chunk_size)
    dt_pad = torch.nn.functional.pad(dt.detach(), (0, n_chunks * chunk_size - L))
    s = dt_pad.view(b, G, dg, n_chunks, chunk_size).cumsum(-1)
    ranges = ((s.amax(-1) - s.amin(-1)) * A_absmax[..., None]).amax((0, 1, 2)).tolist()

    h = u_f.new_zeros(b, G, dg, N)
    ys = []
    # split (not slicing) so that autograd's backward concatenates instead of scattering into full-size zeros
    chunks = zip(*(t.split(chunk_size, -1) for t in (dt, x, B_f, C_f)))
    for (dt_c, x_c, B_c, C_c), span_range in zip(chunks, ranges):
        y_parts, h = _scan_span(dt_c, x_c, A_g, B_c, C_c, h, A_absmax, span_range=span_range)
        ys += y_parts
    y = torch.cat(ys, -1).reshape(b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_f
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(compute))
    out = y.to(u.dtype)
    return (out, h.reshape(b, d, N)) if return_last_state else out
