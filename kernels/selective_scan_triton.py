"""Triton selective scan: forward and backward kernels (their autograd is the ``medmamba::selective_scan`` op's).

Each program owns BLOCK_D channels of one group (so B and C tiles are shared by its rows) and walks the sequence in
chunks of BLOCK_T steps; inside a chunk the linear recurrence h_t = a_t h_{t-1} + b_t is a `tl.associative_scan`.
The forward pass stores the state only at chunk starts (batch, dim, n_chunks, N); the backward pass walks the
chunks in reverse, recomputes each chunk's states from its checkpoint and runs the adjoint recurrence
g_t = C_t dy_t + a_{t+1} g_{t+1} as a reverse scan. dB and dC are summed over a group's channels with atomics.
Inputs are expected already validated by `medmamba.kernels.selective_scan` (B, C as (batch, G, N, L)).
"""
import torch
import triton
import triton.language as tl

BLOCK_D = 4
BLOCK_T = 32


@triton.jit
def _linear_recurrence(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): x -> a2 (a1 x + b1) + b2
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _load_dt(delta_ptr, bias, offs, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta' = softplus(delta + bias) or delta + bias, zero where masked (so padding leaves the state unchanged).
    Also returns delta + bias (needed for the softplus derivative)."""
    raw = tl.load(delta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = tl.maximum(raw, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(raw)))
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _program_channels(A_ptr, D_ptr, bias_ptr, dim, L, G, N, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's channels (BLOCK_D rows of group program_id(1), batch program_id(2)), their A, D and bias,
    and the base offsets of its (dim, L), (G, N, L) and (dim, N) rows."""
    g = tl.program_id(1)
    bi = tl.program_id(2).to(tl.int64)
    dg = dim // G
    rows = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = rows < dg
    chan = g * dg + rows
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + chan[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        D = tl.load(D_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=mask_d, other=0.0).to(tl.float32)
    row_base = bi * dim * L + chan[:, None] * L
    bc_base = (bi * G + g) * N * L + n[:, None] * L
    dn_offs = (bi * dim + chan[:, None]) * N + n[None, :]
    return bi, chan, n, mask_d, mask_n, mask_dn, A, D, bias, row_base, bc_base, dn_offs


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
                dim, L, G, N, n_chunks,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                STORE_CKPT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    bi, chan, n, mask_d, mask_n, mask_dn, A, D, bias, row_base, bc_base, dn_offs = _program_channels(
        A_ptr, D_ptr, bias_ptr, dim, L, G, N, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    last_col = tl.arange(0, BLOCK_T) == BLOCK_T - 1
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(0, n_chunks):
        if STORE_CKPT:
            tl.store(ckpt_ptr + ((bi * dim + chan[:, None]) * n_chunks + c) * N + n[None, :], h, mask=mask_dn)
        t = c * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]
        offs = row_base + t[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _load_dt(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
        mask_nt = mask_n[:, None] & mask_t[None, :]
        Bt = tl.load(B_ptr + bc_base + t[None, :], mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_base + t[None, :], mask=mask_nt, other=0.0).to(tl.float32)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        b = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, b_cum = tl.associative_scan((a, b), 2, _linear_recurrence)
        H = a_cum * h[:, :, None] + b_cum
        y = tl.sum(H * Ct[None, :, :], axis=1)
        if HAS_D:
            y += D[:, None] * u
        if HAS_Z:
            zt = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        tl.store(out_ptr + offs, y, mask=mask)
        h = tl.sum(tl.where(last_col[None, None, :], H, 0.0), axis=2)
    tl.store(last_ptr + dn_offs, h, mask=mask_dn)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dout_ptr, dlast_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr,
                dim, L, G, N, n_chunks,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                HAS_DLAST: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    bi, chan, n, mask_d, mask_n, mask_dn, A, D, bias, row_base, bc_base, dn_offs = _program_channels(
        A_ptr, D_ptr, bias_ptr, dim, L, G, N, HAS_D, HAS_BIAS, BLOCK_D, BLOCK_N)
    first_col = tl.arange(0, BLOCK_T) == 0
    if HAS_DLAST:
        g_next = tl.load(dlast_ptr + dn_offs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        g_next = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        start = c * BLOCK_T
        t = start + tl.arange(0, BLOCK_T)
        mask_t = t < L
        mask = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        offs = row_base + t[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _load_dt(delta_ptr, bias, offs, mask, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_base + t[None, :], mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_base + t[None, :], mask=mask_nt, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        h0 = tl.load(ckpt_ptr + ((bi * dim + chan[:, None]) * n_chunks + c) * N + n[None, :], mask=mask_dn,
                     other=0.0)
        # states before each step: scan of the step one earlier (identity at the chunk's first step)
        tp = t - 1
        mask_p = mask_d[:, None] & ((tp >= start) & (tp < L))[None, :]
        mask_pnt = mask_n[:, None] & ((tp >= start) & (tp < L))[None, :]
        u_p = tl.load(u_ptr + row_base + tp[None, :], mask=mask_p, other=0.0).to(tl.float32)
        dt_p, _ = _load_dt(delta_ptr, bias, row_base + tp[None, :], mask_p, HAS_BIAS, SOFTPLUS)
        B_p = tl.load(B_ptr + bc_base + tp[None, :], mask=mask_pnt, other=0.0).to(tl.float32)
        a_cum, b_cum = tl.associative_scan((tl.exp(dt_p[:, None, :] * A[:, :, None]),
                                            (dt_p * u_p)[:, None, :] * B_p[None, :, :]), 2, _linear_recurrence)
        H_prev = a_cum * h0[:, :, None] + b_cum
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        H = a * H_prev + (dt * u)[:, None, :] * Bt[None, :, :]
        dy = dout
        if HAS_Z:
            zt = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = tl.sum(H * Ct[None, :, :], axis=1)
            if HAS_D:
                y += D[:, None] * u
            sig = tl.sigmoid(zt)
            tl.store(dz_ptr + offs, dout * y * sig * (1.0 + zt * (1.0 - sig)), mask=mask)
            dy = dout * zt * sig
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
        tl.atomic_add(dC_ptr + bc_base + t[None, :], tl.sum(dy[:, None, :] * H, axis=0), mask=mask_nt)
        # adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}, reverse scan carried in from the next chunk
        tn = t + 1
        mask_n1 = mask_d[:, None] & (tn < L)[None, :]
        dt_n, _ = _load_dt(delta_ptr, bias, row_base + tn[None, :], mask_n1, HAS_BIAS, SOFTPLUS)
        a_rev, g_rev = tl.associative_scan((tl.exp(dt_n[:, None, :] * A[:, :, None]), dy[:, None, :] * Ct[None, :, :]),
                                           2, _linear_recurrence, reverse=True)
        gadj = g_rev + a_rev * g_next[:, :, None]
        g_next = tl.sum(tl.where(first_col[None, None, :], gadj, 0.0), axis=2)
        da = gadj * H_prev * a
        ddt = tl.sum(da * A[:, :, None] + gadj * u[:, None, :] * Bt[None, :, :], axis=1)
        dA_acc += tl.sum(da * dt[:, None, :], axis=2)
        tl.atomic_add(dB_ptr + bc_base + t[None, :], tl.sum(gadj * (dt * u)[:, None, :], axis=0), mask=mask_nt)
        du = tl.sum(gadj * Bt[None, :, :], axis=1) * dt
        if HAS_D:
            du += dy * D[:, None]
        tl.store(du_ptr + offs, du, mask=mask)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        tl.store(ddelta_ptr + offs, ddt, mask=mask)
    tl.store(dA_ptr + dn_offs, dA_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + bi * dim + chan, dD_acc, mask=mask_d)


def checkpoint_shape(batch: int, dim: int, L: int, N: int) -> tuple[int, int, int, int]:
    """Shape of the states the forward pass keeps for backward: the state at each chunk's start."""
    return batch, dim, triton.cdiv(L, BLOCK_T), N


def selective_scan_triton_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                              save_for_backward=False):
    """Forward pass; B, C (batch, G, N, L). Tile sizes are the module's BLOCK_D (channels per program) and
    BLOCK_T (chunk length).

    Returns:
        out (batch, dim, L) in u's dtype, the last state (batch, dim, N) in float32, and the chunk checkpoints
        for ``selective_scan_triton_bwd`` (``checkpoint_shape``; empty without save_for_backward).
    """
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D, z, delta_bias = (t.contiguous() if t is not None else None for t in (D, z, delta_bias))
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    n_chunks = triton.cdiv(L, BLOCK_T)
    out = torch.empty_like(u)
    last = torch.empty(batch, dim, N, dtype=torch.float32, device=u.device)
    ckpt = torch.empty(checkpoint_shape(batch, dim, L, N) if save_for_backward else (0,), dtype=torch.float32,
                       device=u.device)
    grid = (triton.cdiv(dim // G, BLOCK_D), G, batch)
    dummy = A
    _fwd_kernel[grid](u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
                      delta_bias if delta_bias is not None else dummy, out, last, ckpt if save_for_backward else last,
                      dim, L, G, N, n_chunks,
                      HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                      SOFTPLUS=bool(delta_softplus), STORE_CKPT=save_for_backward, BLOCK_D=BLOCK_D,
                      BLOCK_N=max(triton.next_power_of_2(N), 2), BLOCK_T=BLOCK_T)
    return out, last, ckpt


def selective_scan_triton_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, dout, dlast):
    """Backward pass from ``selective_scan_triton_fwd``'s checkpoints; dout, dlast may be None (zero).

    Returns:
        the gradients of (u, delta, A, B, C, D, z, delta_bias), each in its input's dtype, None for absent inputs.
    """
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D, z, delta_bias = (t.contiguous() if t is not None else None for t in (D, z, delta_bias))
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    n_chunks = ckpt.shape[2]
    dout = torch.zeros_like(u) if dout is None else dout.contiguous()
    f32 = dict(dtype=torch.float32, device=u.device)
    du = torch.empty(batch, dim, L, **f32)
    ddelta = torch.empty(batch, dim, L, **f32)
    dz = torch.empty(batch, dim, L, **f32) if z is not None else None
    dB = torch.zeros(batch, G, N, L, **f32)
    dC = torch.zeros(batch, G, N, L, **f32)
    dA = torch.empty(batch, dim, N, **f32)
    dD = torch.empty(batch, dim, **f32) if D is not None else None
    dummy = du
    grid = (triton.cdiv(dim // G, BLOCK_D), G, batch)
    _bwd_kernel[grid](u, delta, A, B, C, D if D is not None else A, z if z is not None else A,
                      delta_bias if delta_bias is not None else A, ckpt, dout,
                      dlast.contiguous() if dlast is not None else dummy,
                      du, ddelta, dz if dz is not None else dummy, dB, dC, dA, dD if dD is not None else dummy,
                      dim, L, G, N, n_chunks,
                      HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                      SOFTPLUS=bool(delta_softplus), HAS_DLAST=dlast is not None, BLOCK_D=BLOCK_D,
                      BLOCK_N=max(triton.next_power_of_2(N), 2), BLOCK_T=BLOCK_T)
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.sum(0).to(D.dtype) if D is not None else None, dz.to(z.dtype) if z is not None else None,
            ddelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None)
