"""Selective scan on the CPU with numba: one fused forward kernel and one fused reverse-time backward kernel.

Channels are the vector lanes: a task owns a block of up to 64 channels of one group and batch, and every inner
loop of the recurrences runs over the block's channels, contiguous in (N, channels) and (steps, channels) buffers
(an inner loop over N = 16 would be shorter than LLVM's vectors; over channels it needs no horizontal sums).

Forward, in parallel over the blocks: L in chunks of CHUNK steps. Per chunk, the block's delta' (bias, softplus) and
x = delta' u are formed along the inputs' rows (contiguous in time) and transposed to time-major, then each step runs
h = exp(delta' A) h + x B and y = <C, h> in one loop, and y is written out; D u and the silu(z) gate are applied
along the output's rows at the end. For backward, only the state entering each chunk is stored (batch, L / CHUNK,
N, dim).

Backward, in parallel over (part, batch, group), each part owning a share of the group's channel blocks: chunks in
reverse, each chunk's states recomputed from its checkpoint into a (CHUNK + 1, N, channels) buffer, then the adjoint
g_t = C_t dy_t + exp(delta'_{t+1} A) g_{t+1} walked back through the chunk, forming every gradient in the same pass.
The elementwise work (delta', the gate, du, ddelta, dD) runs along the inputs' rows, vectorised over time, with
transposes to and from the time-major buffers of the scan loops. dB and dC are shared by a group's channels: each
part stores the sums of its first block into its own time-major partial and adds those of the others (partials summed
afterwards when there are several), returned as transposes (the layout of the networks' B and C); dA and dD are kept
per batch and summed afterwards.

exp is a float32 polynomial (range reduction by ln 2, rounding by a shifted addition, degree-5 minimax polynomial,
2**k from the exponent bits; relative error below 2.1e-7 for |x| <= 20, 4e-7 near |x| = 87 from float32's ln 2) that
LLVM vectorises; the libm call would not vectorise here (numba's SVML path needs a patched LLVM that llvmlite no
longer ships). Its argument is clamped to [-87, 88], so decays never go below float32's smallest normal (as the
torch path's floor) and it saturates at exp(88) = 1.7e38. float64 inputs are computed in float64 with libm's exp.

Compiled kernels are cached on disk (``cache_dir()``, ``NUMBA_CACHE_DIR`` when set); a first compile is announced
on the ``medmamba`` logger and its duration recorded there (``compile_record()``, shown by ``medmamba doctor``).
Inputs are expected already validated and normalised by `medmamba.kernels.selective_scan`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import event
from numba.extending import intrinsic, overload

CHUNK = 64  # steps between the checkpoints stored for backward
_MAX_LANES = 64  # channels per block at most
_MIN_LANES = 16  # and at least, unless a group has fewer channels


def _default_cache_dir() -> Path:
    """``NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/medmamba/numba`` (``~/.cache/medmamba/numba``)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medmamba" / "numba"


# numba reads the cache folder when a cached function is defined (below), not when it is imported
numba.config.CACHE_DIR = str(_default_cache_dir())


def cache_dir() -> Path:
    """Where the compiled kernels are cached (chosen at import: ``NUMBA_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/medmamba/numba``, by default ``~/.cache/medmamba/numba``)."""
    return Path(numba.config.CACHE_DIR)


_log = logging.getLogger(__name__)

NUMBA_OPTIONS = dict(cache=True, error_model="numpy", boundscheck=False,
             fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})  # NaN and inf keep their meaning

_F32 = np.float32
_LOG2E, _LN2 = _F32(1.4426950408889634), _F32(0.6931471805599453)
# exp(r) = 1 + r (c1 + r (c2 + ... + r c5)) on |r| <= ln(2) / 2: minimax in relative error (1e-7), c0 fixed to 1
_EXP_MINIMAX = tuple(_F32(c) for c in (0.9999997070, 0.4999914918, 0.1666763659, 0.04189797752, 0.008290306730))
_EXP_SHIFT = 1.5 * 2 ** 23 + 127  # float32 sums near it are integers, their low mantissa bits the integer + 127
_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_ZERO32, _ONE32, _TWO32 = _F32(0), _F32(1), _F32(2)
# log1p(e) = 2 atanh(s), s = e / (2 + e) in (0, 1/3] for e in (0, 1]: 2 (s + s^3/3 + ... + s^13/13)
_ATANH_P = tuple(_F32(1 / k) for k in (3, 5, 7, 9, 11, 13))
_SOFTPLUS_THRESHOLD = 20.0  # above it softplus(x) = x, as torch's


@intrinsic
def _exp_reduce(typingctx, x):
    """(r, 2**k) with x = k ln 2 + r, k the integer nearest x / ln 2, for float32 x in [-87, 88]: x / ln 2 +
    _EXP_SHIFT rounds to an integer whose low mantissa bits are k + 127, the exponent bits of 2**k. Written in LLVM IR
    because fast-math flags would cancel the shift's addition and subtraction and distribute k ln 2."""
    sig = types.UniTuple(types.float32, 2)(types.float32)

    def codegen(context, builder, signature, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        shift = ir.Constant(f32, _EXP_SHIFT)
        shifted = builder.fma(args[0], ir.Constant(f32, _LOG2E), shift)
        k = builder.fsub(shifted, shift)
        r = builder.fma(builder.fneg(k), ir.Constant(f32, _LN2), args[0])
        pow2 = builder.bitcast(builder.shl(builder.bitcast(shifted, i32), ir.Constant(i32, 23)), f32)
        return context.make_tuple(builder, signature.return_type, (r, pow2))

    return sig, codegen


def _exp_f32(x):
    # clamped so that 2**k stays a normal float (comparisons written so that NaN passes through)
    x = _EXP_LO if x < _EXP_LO else x
    x = _EXP_HI if x > _EXP_HI else x
    r, pow2 = _exp_reduce(x)  # |r| <= ln(2) / 2; float32 ln 2 is off by 2e-9, k times that at most 3e-7
    c1, c2, c3, c4, c5 = _EXP_MINIMAX
    return (_ONE32 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * c5))))) * pow2


def _exp(x):
    """exp, vectorisable in float32 (see the module docstring); numba only."""
    raise NotImplementedError


def _softplus(x):
    """softplus(x) = log(1 + exp(x)), x itself above 20 as torch's; numba only."""
    raise NotImplementedError


def sigmoid(x):
    """1 / (1 + exp(-x)) with the vectorisable float32 exp (see the module docstring); numba only (shared with the
    other CPU kernels)."""
    raise NotImplementedError


@overload(_exp)
def _exp_overload(x):
    if x == types.float32:
        return _exp_f32
    return lambda x: math.exp(x)


@overload(_softplus)
def _softplus_overload(x):
    if x == types.float32:
        def softplus_f32(x):
            e = _exp(-abs(x))
            s = e / (_TWO32 + e)
            s2 = s * s
            c3, c5, c7, c9, c11, c13 = _ATANH_P
            series = c3 + s2 * (c5 + s2 * (c7 + s2 * (c9 + s2 * (c11 + s2 * c13))))
            result = max(x, _ZERO32) + _TWO32 * s * (_ONE32 + s2 * series)
            return x if x > _SOFTPLUS_THRESHOLD else result
        return softplus_f32
    return lambda x: x if x > _SOFTPLUS_THRESHOLD else max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@overload(sigmoid)
def _sigmoid_overload(x):
    if x == types.float32:
        return lambda x: _ONE32 / (_ONE32 + _exp(-x))
    return lambda x: 1.0 / (1.0 + math.exp(-x))


@njit(**NUMBA_OPTIONS)
def _copy(src, dst):
    """dst[...] = src for 2-D arrays of one shape (explicit loops: numba's array-to-array assignment compiles its
    error formatting, seconds of compile time)."""
    for r in range(src.shape[0]):
        for c in range(src.shape[1]):
            dst[r, c] = src[r, c]


@njit(**NUMBA_OPTIONS)
def _scatter_block(src, b, j0, cb, t0, n, dst):
    """dst[b, j0 + j, t0 + i] = src[i, j]: a block's time-major steps t0 .. t0 + n - 1 back to its channels' rows."""
    for j in range(cb):
        for i in range(n):
            dst[b, j0 + j, np.uint64(t0 + i)] = src[i, j]


# Loops index whole arrays (h[k, j]) rather than taking row views (h[k]): in numba each view costs two
# reference-count updates, atomic operations. An index that LLVM cannot prove non-negative (t0 + i) is made unsigned
# (np.uint64): numba wraps negative indices around, and that select keeps the loop scalar.


@njit(**NUMBA_OPTIONS)
def _transpose(src, n, cb, dst):
    """dst[i, j] = src[j, i] for i < n, j < cb."""
    for j in range(cb):
        for i in range(n):
            dst[i, j] = src[j, i]


@njit(**NUMBA_OPTIONS)
def _delta_steps(delta, u, bias, softplus, b, j0, cb, t0, n, dt_r, x_r, sig_r, dt, x):
    """dt = softplus(delta + bias) (or delta + bias) and x = dt u for a block's channels and steps: formed along the
    inputs' rows in dt_r and x_r (channels, CHUNK), vectorised over time, then transposed to time-major dt and x.
    When sig_r has rows (backward), it gets sigmoid(delta + bias), softplus's derivative."""
    for j in range(cb):
        c = np.uint64(j0 + j)
        bias_j = bias[c]
        for i in range(n):
            dt_r[j, i] = delta[b, c, np.uint64(t0 + i)] + bias_j
        if softplus:
            if sig_r.shape[0]:
                for i in range(n):
                    sig_r[j, i] = sigmoid(dt_r[j, i])
            for i in range(n):
                dt_r[j, i] = _softplus(dt_r[j, i])
        for i in range(n):
            x_r[j, i] = dt_r[j, i] * u[b, c, np.uint64(t0 + i)]
    _transpose(dt_r, n, cb, dt)
    _transpose(x_r, n, cb, x)


@njit(inline="always", **NUMBA_OPTIONS)
def _scan_steps(h, A_blk, B_g, C_g, t0, n, width, dt, x, y):
    """h = exp(dt A) h + x B and y = <C, h> for steps t0 .. t0 + n - 1 of a block of ``width`` channels (inlined, so
    that a constant width reaches LLVM)."""
    for i in range(n):
        for j in range(width):
            y[i, j] = 0
        for k in range(A_blk.shape[0]):
            b_k, c_k = B_g[t0 + i, k], C_g[t0 + i, k]
            for j in range(width):
                h_kj = _exp(dt[i, j] * A_blk[k, j]) * h[k, j] + x[i, j] * b_k
                h[k, j] = h_kj
                y[i, j] += h_kj * c_k


@njit(**NUMBA_OPTIONS)
def _forward_task(task, u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, out, last, ckpt):
    """One block of up to ``lanes`` channels of one group and batch (see _forward_kernel); the channels are the
    vector lanes."""
    batch, dim, L = u.shape
    G, N = Bt.shape[1], At.shape[0]
    dg = dim // G
    blocks = -(-dg // lanes)
    gate, save = z.size > 0, ckpt.size > 0
    b, g, q = task // (G * blocks), task // blocks % G, task % blocks
    j0, cb = g * dg + q * lanes, min(lanes, dg - q * lanes)
    B_g, C_g = Bt[b, g], Ct[b, g]
    A_blk = np.empty((N, cb), At.dtype)
    _copy(At[:, j0:j0 + cb], A_blk)
    h = np.zeros((N, cb), At.dtype)
    buffers = np.empty((3, CHUNK, cb), At.dtype)
    dt, x, y = buffers[0], buffers[1], buffers[2]
    rows = np.empty((2, cb, CHUNK), At.dtype)
    for t0 in range(0, L, CHUNK):
        n = min(CHUNK, L - t0)
        if save:
            _copy(h, ckpt[b, t0 // CHUNK, :, j0:j0 + cb])
        _delta_steps(delta, u, bias, softplus, b, j0, cb, t0, n, rows[0], rows[1], rows[0][:0], dt, x)
        if cb == _MAX_LANES:  # a constant width: LLVM unrolls the vectorised channel loop (1.15x faster)
            _scan_steps(h, A_blk, B_g, C_g, t0, n, _MAX_LANES, dt, x, y)
        else:
            _scan_steps(h, A_blk, B_g, C_g, t0, n, cb, dt, x, y)
        _scatter_block(y, b, j0, cb, t0, n, out)
    _copy(h, last[b, :, j0:j0 + cb])
    # out = (y + D u) silu(z), along the output's rows
    for j in range(np.uint64(j0), np.uint64(j0 + cb)):
        D_j = D[j]
        if gate:
            for t in range(L):
                out[b, j, t] = (out[b, j, t] + D_j * u[b, j, t]) * z[b, j, t] * sigmoid(z[b, j, t])
        else:
            for t in range(L):
                out[b, j, t] += D_j * u[b, j, t]


@njit(parallel=True, **NUMBA_OPTIONS)
def _forward_kernel(u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, out, last, ckpt):
    """u, delta, out: (batch, dim, L); At: (N, dim); Bt, Ct: (batch, G, L, N); D, bias: (dim,); z: (batch, dim, L),
    or empty for no gate; last: (batch, N, dim); ckpt: (batch, n_chunks, N, dim), or empty. One task per block of
    channels."""
    G, dg = Bt.shape[1], u.shape[1] // Bt.shape[1]
    for task in prange(u.shape[0] * G * -(-dg // lanes)):
        _forward_task(np.int64(task), u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, out, last, ckpt)


@njit(inline="always", **NUMBA_OPTIONS)
def _recompute_states(states, decay, A_blk, B_g, C_g, t0, n, width, dt, x, y):
    """From states[0], the state entering step t0: states[i + 1] = decay[i] states[i] + x_i B, decay[i] =
    exp(dt_i A) and y_i = <C, states[i + 1]> for steps t0 + i, i < n, of a block of ``width`` channels (inlined, so
    that a constant width reaches LLVM)."""
    for i in range(n):
        t = np.uint64(t0 + i)
        for j in range(width):
            y[i, j] = 0
        for k in range(A_blk.shape[0]):
            b_k, c_k = B_g[t, k], C_g[t, k]
            for j in range(width):
                a = _exp(dt[i, j] * A_blk[k, j])
                decay[i, k, j] = a
                h_kj = a * states[i, k, j] + x[i, j] * b_k
                states[i + 1, k, j] = h_kj
                y[i, j] += h_kj * c_k


@njit(inline="always", **NUMBA_OPTIONS)
def _adjoint_steps(adjoint, states, decay, A_blk, dA_blk, B_g, C_g, dB_g, dC_g, first, t0, n, width, dt, x, dy, dx,
                   ddt):
    """Steps t0 + n - 1 down to t0 of a block of ``width`` channels: the adjoint g_t = C_t dy_t + exp(dt_{t+1} A)
    g_{t+1} (adjoint holds the second term on entry and leaves it for step t0 - 1) and, per step, dx, ddt (of the
    exponent's dt only), dA, and dB, dC summed over the channels: stored when ``first``, else added (inlined)."""
    for i in range(n - 1, -1, -1):
        t = np.uint64(t0 + i)
        for j in range(width):
            dx[i, j] = 0
            ddt[i, j] = 0
        for k in range(A_blk.shape[0]):
            b_k, c_k = B_g[t, k], C_g[t, k]
            dB_tk, dC_tk = dt.dtype.type(0), dt.dtype.type(0)
            for j in range(width):
                g_h = adjoint[k, j] + c_k * dy[i, j]  # adjoint of h_t
                dC_tk += dy[i, j] * states[i + 1, k, j]
                dB_tk += g_h * x[i, j]
                dx[i, j] += g_h * b_k
                grad_exponent = g_h * states[i, k, j] * decay[i, k, j]  # d/d(dt A) of exp(dt A) h_{t-1}
                ddt[i, j] += grad_exponent * A_blk[k, j]
                dA_blk[k, j] += grad_exponent * dt[i, j]
                adjoint[k, j] = g_h * decay[i, k, j]
            if first:
                dB_g[t, k], dC_g[t, k] = dB_tk, dC_tk
            else:
                dB_g[t, k] += dB_tk
                dC_g[t, k] += dC_tk


@njit(**NUMBA_OPTIONS)
def _backward_task(task, u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, ckpt, dout, dlast, du, ddelta, dz, dA,
                   dD, dB, dC):
    """One (part, batch, group): the part's share of the group's channel blocks (see _backward_kernel)."""
    batch, dim, L = u.shape
    G, N = Bt.shape[1], At.shape[0]
    dg = dim // G
    blocks = -(-dg // lanes)
    parts = dB.shape[0]
    gate = z.size > 0
    zero, one = At.dtype.type(0), At.dtype.type(1)
    p, b, g = task // (batch * G), task // G % batch, task % G
    B_g, C_g, dB_p, dC_p = Bt[b, g], Ct[b, g], dB[p, b, g], dC[p, b, g]
    width = min(lanes, dg)  # of the buffers: the widest block
    A_blk = np.empty((N, width), At.dtype)
    states = np.empty((CHUNK + 1, N, width), At.dtype)  # states[i] enters step t0 + i
    decay = np.empty((CHUNK, N, width), At.dtype)
    adjoint = np.empty((N, width), At.dtype)  # of the state leaving the current step, times that step's decay
    dA_blk = np.empty((N, width), At.dtype)
    steps = np.empty((6, CHUNK, width), At.dtype)  # time-major, for the scan loops
    dt, x, y, dy, dx, ddt = steps[0], steps[1], steps[2], steps[3], steps[4], steps[5]
    rows = np.empty((7, width, CHUNK), At.dtype)  # along the inputs' rows, for the elementwise loops
    dt_r, x_r, y_r, dy_r, sig_r, dx_r, ddt_r = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6]
    for q in range(p, blocks, parts):
        j0, cb = g * dg + q * lanes, min(lanes, dg - q * lanes)
        _copy(At[:, j0:j0 + cb], A_blk)
        _copy(dlast[b, :, j0:j0 + cb], adjoint)
        dA_blk[:] = zero
        for j in range(cb):
            dD[b, j0 + j] = zero
        for t0 in range(CHUNK * ((L - 1) // CHUNK), -1, -CHUNK):
            n = min(CHUNK, L - t0)
            _delta_steps(delta, u, bias, softplus, b, j0, cb, t0, n, dt_r, x_r, sig_r, dt, x)
            _copy(ckpt[b, t0 // CHUNK, :, j0:j0 + cb], states[0])
            if cb == _MAX_LANES:  # constant widths: LLVM unrolls the vectorised channel loop
                _recompute_states(states, decay, A_blk, B_g, C_g, t0, n, _MAX_LANES, dt, x, y)
            elif cb == _MIN_LANES:
                _recompute_states(states, decay, A_blk, B_g, C_g, t0, n, _MIN_LANES, dt, x, y)
            else:
                _recompute_states(states, decay, A_blk, B_g, C_g, t0, n, cb, dt, x, y)
            # the gate: out = (y + D u) silu(z)
            if gate:
                _transpose(y, cb, n, y_r)
            for j in range(cb):
                c = np.uint64(j0 + j)
                for i in range(n):
                    dy_r[j, i] = dout[b, c, np.uint64(t0 + i)]
                if gate:
                    D_j = D[c]
                    for i in range(n):
                        t = np.uint64(t0 + i)
                        z_ji = z[b, c, t]
                        sig = sigmoid(z_ji)
                        dz[b, c, t] = dy_r[j, i] * (y_r[j, i] + D_j * u[b, c, t]) * sig * (one + z_ji * (one - sig))
                        dy_r[j, i] *= z_ji * sig
            _transpose(dy_r, n, cb, dy)
            if cb == _MAX_LANES:
                _adjoint_steps(adjoint, states, decay, A_blk, dA_blk, B_g, C_g, dB_p, dC_p, q == p, t0, n,
                               _MAX_LANES, dt, x, dy, dx, ddt)
            else:
                _adjoint_steps(adjoint, states, decay, A_blk, dA_blk, B_g, C_g, dB_p, dC_p, q == p, t0, n, cb,
                               dt, x, dy, dx, ddt)
            _transpose(dx, cb, n, dx_r)
            _transpose(ddt, cb, n, ddt_r)
            for j in range(cb):
                c = np.uint64(j0 + j)
                D_j, dD_j = D[c], zero  # du = dx dt + dy D
                for i in range(n):
                    t = np.uint64(t0 + i)
                    u_ji = u[b, c, t]
                    dD_j += dy_r[j, i] * u_ji
                    grad_dt = ddt_r[j, i] + dx_r[j, i] * u_ji  # through the exponents and x = dt u
                    ddelta[b, c, t] = grad_dt * sig_r[j, i] if softplus else grad_dt
                    du[b, c, t] = dx_r[j, i] * dt_r[j, i] + dy_r[j, i] * D_j
                dD[b, c] += dD_j
        _copy(dA_blk[:, :cb], dA[b, :, j0:j0 + cb])


@njit(parallel=True, **NUMBA_OPTIONS)
def _backward_kernel(u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, ckpt, dout, dlast, du, ddelta, dz, dA, dD,
                     dB, dC):
    """Inputs as _forward_kernel's; dout: (batch, dim, L); dlast: (batch, N, dim). Writes du, ddelta, dz (empty
    without gate): (batch, dim, L); dA: (batch, N, dim); dD: (batch, dim); dB, dC: (parts, batch, G, L, N). One task
    per (part, batch, group), each summing its share of the group's channel blocks into its own partial of dB and
    dC."""
    for task in prange(dB.shape[0] * u.shape[0] * Bt.shape[1]):
        _backward_task(np.int64(task), u, delta, At, Bt, Ct, D, z, bias, softplus, lanes, ckpt, dout, dlast, du,
                       ddelta, dz, dA, dD, dB, dC)


# ---------------------------------------------------------------------------------------------------------------
# torch-facing functions


def checkpoint_shape(batch: int, dim: int, L: int, N: int) -> tuple[int, int, int, int]:
    """Shape of the states the forward pass keeps for backward: the state entering each chunk."""
    return batch, -(-L // CHUNK), N, dim


def sync_threads() -> int:
    """torch's thread count (nnU-Net and users set it), within numba's pool; also applied to numba."""
    torch_threads = torch.get_num_threads()
    threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    # the first call starts numba's OpenMP pool, which resets the thread count of the OpenMP runtime torch shares
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    return threads


def _lanes(tasks_per_block: int, dg: int, threads: int) -> int:
    """Channels per block: _MAX_LANES, or fewer while that leaves threads idle (at least two tasks per thread)."""
    lanes = _MAX_LANES
    while lanes > 16 and tasks_per_block * -(-dg // lanes) < 2 * threads:
        lanes //= 2
    return lanes


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the CPU kernels compute in for t: float64 for float64, float32 for every other float dtype."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def kernel_array(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """t as a C-contiguous numpy array of ``dtype`` for a kernel (copied only where it is not one already)."""
    return t.detach().to(dtype).contiguous().numpy()


def _kernel_inputs(u, delta, A, B, C, D, z, delta_bias):
    """numpy views of contiguous copies in the compute dtype (``compute_dtype(u)``): A as (N, dim), B and C
    time-major (batch, G, L, N); absent D and delta_bias as zeros, absent z as an empty array."""
    compute = compute_dtype(u)
    zeros = torch.zeros(u.shape[1], dtype=compute)

    def prepared(t, absent=None):
        return kernel_array(absent if t is None else t, compute)

    return (prepared(u), prepared(delta), prepared(A.t()), prepared(B.transpose(-1, -2)),
            prepared(C.transpose(-1, -2)), prepared(D, zeros), prepared(z, zeros[:0].view(0, 0, 0)),
            prepared(delta_bias, zeros), compute)


def selective_scan_numba_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             save_for_backward=False):
    """Forward pass; B, C (batch, G, N, L).

    Returns:
        out (batch, dim, L) in u's dtype, the last state (batch, dim, N) in the compute dtype, and the chunk
        checkpoints for ``selective_scan_numba_bwd`` (``checkpoint_shape``; empty without save_for_backward).
    """
    *args, compute = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, L = u.shape
    G, N = B.shape[1], A.shape[1]
    out = torch.empty(batch, dim, L, dtype=compute)
    last = torch.empty(batch, N, dim, dtype=compute)
    ckpt = torch.empty(checkpoint_shape(batch, dim, L, N) if save_for_backward else (0, 0, 0, 0), dtype=compute)
    lanes = _lanes(batch * G, dim // G, sync_threads())
    _forward_kernel(*args, bool(delta_softplus), lanes, out.numpy(), last.numpy(), ckpt.numpy())
    return out.to(u.dtype), last.transpose(1, 2).contiguous(), ckpt


def selective_scan_numba_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, ckpt, dout, dlast):
    """Backward pass from ``selective_scan_numba_fwd``'s checkpoints; dout, dlast may be None (zero).

    Returns:
        the gradients of (u, delta, A, B, C, D, z, delta_bias), each in its input's dtype, None for absent inputs.
    """
    *args, compute = _kernel_inputs(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, L = u.shape
    G, N = B.shape[1], A.shape[1]
    threads = sync_threads()
    lanes = _lanes(batch * G, dim // G, threads)
    parts = max(1, min(-(-(dim // G) // lanes), -(-threads // (batch * G))))
    f = dict(dtype=compute)
    dout = torch.zeros(batch, dim, L, **f) if dout is None else dout.to(compute).contiguous()
    dlast = torch.zeros(batch, N, dim, **f) if dlast is None else dlast.to(compute).transpose(1, 2).contiguous()
    du, ddelta = torch.empty(batch, dim, L, **f), torch.empty(batch, dim, L, **f)
    dz = torch.empty(batch, dim, L, **f) if z is not None else torch.empty(0, 0, 0, **f)
    dA, dD = torch.empty(batch, N, dim, **f), torch.empty(batch, dim, **f)
    dB, dC = torch.empty(parts, batch, G, L, N, **f), torch.empty(parts, batch, G, L, N, **f)
    _backward_kernel(*args, bool(delta_softplus), lanes, ckpt.numpy(), dout.numpy(), dlast.numpy(), du.numpy(),
                     ddelta.numpy(), dz.numpy(), dA.numpy(), dD.numpy(), dB.numpy(), dC.numpy())
    # time-major, as B and C come from the networks (passed as transposes): returned as transposes, not copied
    dB, dC = (dB[0], dC[0]) if parts == 1 else (dB.sum(0), dC.sum(0))
    return (du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).t().to(A.dtype), dB.transpose(-1, -2).to(B.dtype),
            dC.transpose(-1, -2).to(C.dtype),
            dD.sum(0).to(D.dtype) if D is not None else None, dz.to(z.dtype) if z is not None else None,
            ddelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None)


# ---------------------------------------------------------------------------------------------------------------
# compile notice, compile-time record and warm-up

_RECORD_NAME = "compile-times.json"


def _source_stamp() -> list[int]:
    """This file's modification time and size: numba recompiles when they change, and so the record goes stale."""
    stat = Path(__file__).stat()
    return [stat.st_mtime_ns, stat.st_size]


def compile_record() -> dict | None:
    """The compile times measured when the kernels were last compiled into ``cache_dir()`` (seconds per kernel and
    dtype, with the date), or None when they have not been compiled there for this source and numba version."""
    try:
        record = json.loads((cache_dir() / _RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    current = record.get("numba") == numba.__version__ and record.get("source") == _source_stamp()
    return record if current else None


class _CompileNotice(event.Listener):
    """Announces a compile of the scan kernels on the logger (one line per kernel and dtype) and records its
    duration in the compile-time record."""

    def __init__(self):
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(ev) -> str | None:
        dispatcher = ev.data["dispatcher"]
        if dispatcher not in (_forward_kernel, _backward_kernel):
            return None
        return f"{dispatcher.py_func.__name__.split('_')[1]}-{ev.data['args'][0].dtype}"

    def on_start(self, ev):
        key = self._key(ev)
        if key is not None:
            _log.warning("medmamba: compiling the numba selective-scan %s kernel for %s (first use; takes a while, "
                         "then cached in %s)", *key.split("-"), cache_dir())
            self._started[key] = time.perf_counter()

    def on_end(self, ev):
        key = self._key(ev)
        if key is None or key not in self._started:
            return
        seconds = time.perf_counter() - self._started.pop(key)
        with self._lock:
            record = compile_record() or {"numba": numba.__version__, "source": _source_stamp(), "seconds": {}}
            record["seconds"][key] = round(seconds, 2)
            record["when"] = time.strftime("%Y-%m-%d %H:%M")
            try:
                (cache_dir() / _RECORD_NAME).write_text(json.dumps(record, indent=1))
            except OSError:  # a read-only cache folder: numba then caches elsewhere or not at all
                pass


event.register("numba:compile", _CompileNotice())


def warm_up(dtypes=(torch.float32, torch.float64)) -> None:
    """Compile (or load from the cache) the forward and backward kernels for ``dtypes``."""
    for dtype in dtypes:
        u = torch.ones(1, 2, 3, dtype=dtype)
        bc = torch.ones(1, 1, 2, 3, dtype=dtype)
        args = (u, u, -torch.ones(2, 2, dtype=dtype), bc, bc, None, u, None, True)
        out, _, saved = selective_scan_numba_fwd(*args, save_for_backward=True)
        selective_scan_numba_bwd(*args, saved, torch.ones_like(out), None)
