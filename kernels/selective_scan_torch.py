"""Selective scan in pure PyTorch (the CPU path): a chunk-parallel exact recurrence with a hand-written backward.

Inputs are laid out time-major, one row per step, (L, batch, G, C), and L is cut into chunks of T steps. Blocks
of whole chunks, sized to stay in the CPU's cache, run one after another; within a block step t of every chunk is
one strided slab, so one in-place multiply-add advances all the block's chunks at once:

1. a_t = exp(dt_t A) and the drive dt_t u_t B_t for every step of the block (one pass each);
2. every chunk's end state from a zero start (T multiply-adds over the block's chunks);
3. the state carried into each chunk, from those and the chunk decays exp(A sum(dt)) (one small step per chunk);
4. the states again from the carried-in states, in place over the drive (T multiply-adds), read out by a
   batched matmul with C.

Python loops run over T and the chunks, never over L; every step is the recurrence itself, so nothing can
overflow that the recurrence does not. Forward keeps only the states for backward, which runs the same scan in
reverse for the adjoint state and forms every gradient from it with one pass or one batched matmul each.
Inputs are expected already validated and normalised by `medmamba.kernels.selective_scan`.
"""
import math
import threading
from pathlib import Path

import torch
import torch.nn.functional as F


def _last_level_cache_bytes() -> int | None:
    """The largest CPU cache Linux reports for cpu0 (None elsewhere or when unreadable)."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 2 ** 10, "M": 2 ** 20}.get(text[-1:], 1)
        if text.rstrip("KM").isdigit():
            sizes.append(int(text.rstrip("KM")) * scale)
    return max(sizes, default=None)


def _block_elements() -> int:
    """Floats in one block's buffer (decays, states): the two buffers within half the last-level cache, between
    2**18 and 2**22 (2**20 where the cache is unknown). Bigger blocks mean fewer, larger ops."""
    cache = _last_level_cache_bytes()
    if cache is None:
        return 2 ** 20
    return 2 ** min(22, max(18, int(math.log2(cache / 2 / 2 / 4))))  # half the cache, two buffers, 4-byte floats


BLOCK_ELEMENTS = _block_elements()
CHUNK_SIZE: int | None = None  # steps per chunk; None: the layout's choice (tests set small values)


class _Layout:
    """Rows (L_padded, batch, G, C) of (batch, G, C, L) tensors, L padded to whole chunks of T steps, and the
    blocks of chunks (row slices) that run one after another.

    per_step: batch * dim * N, the state size. A block holds as many whole chunks as keep its buffers within
    block_elements; T is the power of two nearest sqrt(block steps), which balances the T-step and chunk loops.
    """

    def __init__(self, L: int, per_step: int, chunk_size: int | None = None, block_elements: int = BLOCK_ELEMENTS):
        block_steps = min(L, max(1, block_elements // per_step))
        self.L = L
        self.T = chunk_size or 2 ** max(0, round(math.log2(math.sqrt(block_steps))))
        n_chunks = -(-L // self.T)
        self.rows = n_chunks * self.T
        per_block = max(1, block_steps // self.T) * self.T
        self.blocks = [slice(r, min(r + per_block, self.rows)) for r in range(0, self.rows, per_block)]

    def to_rows(self, t: torch.Tensor, extra: int = 0, slot: str | None = None) -> torch.Tensor:
        """(b, G, C, L) -> (rows + extra, b, G, C); the padded rows are zero (dt = 0 and zero drive keep the
        state, zero gradient adds nothing). slot: a reused buffer (see `_buffer`)."""
        b, G, C, L = t.shape
        out = _buffer((self.rows + extra, b, G, C), t, slot)
        out[L:].zero_()
        _copy_transposed(out[:L].permute(1, 2, 0, 3), t)
        return out

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        _, b, G, C = rows.shape
        out = torch.empty(b, G, C, self.L, dtype=rows.dtype, device=rows.device)
        _copy_transposed(out, rows[:self.L].permute(1, 2, 0, 3))
        return out


def _copy_transposed(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst (b, G, m, n) = src (b, G, n, m) transposed, one 2-D copy per matrix: torch's blocked transpose kernel
    serves 2-D copies only, and a 4-D transposing copy is several times slower."""
    for dst_b, src_b in zip(dst, src):
        for dst_m, src_m in zip(dst_b, src_b):
            dst_m.copy_(src_m.t())


_scratch = threading.local()


def _buffer(shape: torch.Size, like: torch.Tensor, slot: str | None) -> torch.Tensor:
    """An uninitialised contiguous tensor. With a slot, on CPU, the memory is reused across blocks and calls (one
    buffer per slot and thread): touching fresh pages costs more than the arithmetic done on them."""
    if slot is None or like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key, numel = (slot, like.dtype), math.prod(shape)
    if key not in buffers or buffers[key].numel() < numel:
        with torch.inference_mode(False):  # a buffer made in inference mode could not be written outside it
            buffers[key] = torch.empty(numel, dtype=like.dtype)
    return buffers[key][:numel].view(shape)


def release_buffers() -> None:
    """Free this thread's reused buffers (kept between calls; memory measurements release them to count them)."""
    _scratch.__dict__.clear()


def _product(a: torch.Tensor, b: torch.Tensor, slot: str | None = None) -> torch.Tensor:
    """a * b broadcast into a contiguous tensor (a plain mul may follow a broadcast operand's odd strides)."""
    return torch.mul(a, b, out=_buffer(torch.broadcast_shapes(a.shape, b.shape), a, slot))


def _exp_floor(dtype: torch.dtype) -> float:
    return math.log(torch.finfo(dtype).tiny) + 1


def _can_underflow(dt: torch.Tensor, A_t: torch.Tensor) -> bool:
    """Whether some step's dt * A falls below the exp floor (bounds from the extremes of dt and A)."""
    dt_lo, dt_hi = dt.aminmax()
    a_lo, a_hi = A_t.aminmax()
    lowest = torch.stack([dt_lo * a_lo, dt_lo * a_hi, dt_hi * a_lo, dt_hi * a_hi]).min()
    return not bool(lowest >= _exp_floor(dt.dtype))  # NaN counts as possible underflow


def _decays(dt: torch.Tensor, A_t: torch.Tensor, slot: str | None = None, floor: bool = True) -> torch.Tensor:
    """exp(dt A) per step: dt (..., G, dg), A_t (G, N, dg) -> (..., G, N, dg).

    Exponents are floored where the decay would fall below the smallest normal float (about 1e-38 in fp32): CPU
    exp takes a slow path, up to 100x slower, for results that underflow, and a chunk's decay often does. Callers
    that know no exponent can fall that low skip the pass (floor=False)."""
    exponent = _product(dt[..., None, :], A_t, slot)
    if floor:
        exponent.clamp_(min=_exp_floor(dt.dtype))
    return exponent.exp_()


def _chunk_decays(dt: torch.Tensor, A_t: torch.Tensor, T: int) -> torch.Tensor:
    """exp(A sum(dt)) over each chunk of T rows: dt (rows, b, G, dg) -> (rows // T, b, G, N, dg)."""
    return _decays(dt.view(-1, T, *dt.shape[1:]).sum(1), A_t)


def _scan_(decay: torch.Tensor, states: torch.Tensor, chunk_decay: torch.Tensor, h_in: torch.Tensor | None, T: int,
           reverse: bool) -> torch.Tensor:
    """In place: states[t] = states[t] + decay[t] * states[t -+ 1], within every chunk of T rows and across chunks.

    decay, states: (rows, b, G, N, dg), states holding the drive on entry; chunk_decay: (rows // T, b, G, N, dg),
    the product of a chunk's decays; h_in: the state entering the block (None: zero). Returns the leaving state.
    """
    shape = (-1, T, *states.shape[1:])
    decay_steps, state_steps = decay.view(shape).unbind(1), states.view(shape).unbind(1)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    n_chunks = states.shape[0] // T
    chunks = range(n_chunks - 1, -1, -1) if reverse else range(n_chunks)
    # every chunk's leaving state from a zero start
    local = state_steps[steps[0]].clone()
    for t in steps[1:]:
        torch.addcmul(state_steps[t], decay_steps[t], local, out=local)
    # the state entering each chunk
    entering = torch.empty_like(local)
    if h_in is None:
        entering[chunks[0]].zero_()
    else:
        entering[chunks[0]] = h_in
    local_k, chunk_decay_k, entering_k = local.unbind(0), chunk_decay.unbind(0), entering.unbind(0)
    for k, following in zip(chunks[:-1], chunks[1:]):
        torch.addcmul(local_k[k], chunk_decay_k[k], entering_k[k], out=entering_k[following])
    h_out = torch.addcmul(local_k[chunks[-1]], chunk_decay_k[chunks[-1]], entering_k[chunks[-1]])
    # the states from the entering states
    state_steps[steps[0]].addcmul_(decay_steps[steps[0]], entering)
    for prev, t in zip(steps[:-1], steps[1:]):
        state_steps[t].addcmul_(decay_steps[t], state_steps[prev])
    return h_out


def _scan_forward(dt, x, A_t, B, C, keep_states):
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + x_t B_t on (b, G, dg, L) inputs (x = dt u; A_t (G, N, dg);
    B, C (b, G, N, L)). Returns y (b, G, dg, L), h_L (b, G, N, dg) and, with keep_states, every step's state in
    rows (the only (b, dim, N, L)-sized memory kept for backward; empty without); without, each block's states live
    in a reused buffer."""
    b, G, dg, L = dt.shape
    N = A_t.shape[1]
    layout = _Layout(L, b * G * dg * N, CHUNK_SIZE, BLOCK_ELEMENTS)
    T = layout.T
    dt_r, x_r, B_r, C_r = (layout.to_rows(t, 0, None if keep_states else name)
                           for t, name in ((dt, "dt"), (x, "x"), (B, "B"), (C, "C")))
    floor = _can_underflow(dt, A_t)
    y_r = _buffer(x_r.shape, x_r, "y")
    all_states = (torch.empty(layout.rows, b, G, N, dg, dtype=x.dtype, device=x.device) if keep_states
                  else torch.empty(0, dtype=x.dtype, device=x.device))
    h = None
    for rows in layout.blocks:
        dt_b = dt_r[rows]
        drive = (x_r[rows, ..., None, :], B_r[rows, ..., None])
        states = torch.mul(*drive, out=all_states[rows]) if keep_states else _product(*drive, slot="states")
        h = _scan_(_decays(dt_b, A_t, "decay", floor), states, _chunk_decays(dt_b, A_t, T), h, T, reverse=False)
        torch.matmul(C_r[rows, ..., None, :], states, out=y_r[rows, ..., None, :])
    return layout.from_rows(y_r), h, all_states


def _scan_backward(dt, x, A_t, B, C, all_states, grad_y, grad_h_last):
    """Gradients of (dt, x, A_t, B, C) of _scan_forward from its kept states; grad_y (b, G, dg, L) and
    grad_h_last (b, G, N, dg)."""
    b, G, dg, L = dt.shape
    layout = _Layout(L, b * G * dg * A_t.shape[1], CHUNK_SIZE, BLOCK_ELEMENTS)
    T = layout.T
    # dt has a zero row past the end, so dt_r[1:] is dt_{t+1}
    dt_r, x_r, B_r, C_r = (layout.to_rows(t, extra) for t, extra in ((dt, 1), (x, 0), (B, 0), (C, 0)))
    floor = _can_underflow(dt, A_t)
    gy_r = layout.to_rows(grad_y)
    grads = {name: torch.empty_like(t) for name, t in (("x", x_r), ("B", B_r), ("C", C_r))}
    grads["dt"] = torch.empty_like(x_r)
    grad_A = torch.zeros_like(A_t)
    # adjoint state: g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1}, entering from the end with grad_h_last
    g = grad_h_last
    for rows in reversed(layout.blocks):
        dt_next = dt_r[rows.start + 1:rows.stop + 1]
        decay_next = _decays(dt_next, A_t, "decay", floor)
        adjoint = _product(C_r[rows, ..., None], gy_r[rows, ..., None, :], "adjoint")
        g = _scan_(decay_next, adjoint, _chunk_decays(dt_next, A_t, T), g, T, reverse=True)
        states = all_states[rows]
        torch.matmul(states, gy_r[rows, ..., None], out=grads["C"][rows, ..., None])
        torch.matmul(B_r[rows, ..., None, :], adjoint, out=grads["x"][rows, ..., None, :])
        torch.matmul(adjoint, x_r[rows, ..., None], out=grads["B"][rows, ..., None])
        # the decay's gradient, adjoint_t * exp(dt_t A) * h_{t-1}: both factors are the previous row of
        # decay_next and of the states; at the block's first row, exp(dt A) afresh and the previous block's state
        decay_grad = adjoint
        decay_grad[1:].mul_(decay_next[:-1]).mul_(states[:-1])
        if rows.start == 0:
            decay_grad[0] = 0  # h_{-1} = 0
        else:
            decay_grad[0].mul_(_decays(dt_r[rows.start], A_t)).mul_(all_states[rows.start - 1])
        torch.sum(torch.mul(decay_grad, A_t, out=decay_next), -2, out=grads["dt"][rows])
        grad_A += decay_grad.mul_(dt_r[rows, ..., None, :]).sum((0, 1))
    return (*(layout.from_rows(grads[name]) for name in ("dt", "x")), grad_A, layout.from_rows(grads["B"]),
            layout.from_rows(grads["C"]))


def states_shape(batch: int, dim: int, L: int, N: int, G: int) -> tuple[int, ...]:
    """Shape of the states ``selective_scan_torch_fwd`` keeps for backward: (rows, batch, G, N, dim // G)."""
    return _Layout(L, batch * dim * N, CHUNK_SIZE, BLOCK_ELEMENTS).rows, batch, G, N, dim // G


def _scan_inputs(u, delta, A, B, C, delta_bias, delta_softplus):
    """The compute dtype (float64 for float64 u, else float32) and, in it: u, delta + delta_bias, dt, and the
    scan's grouped inputs dt, x = dt u (b, G, dg, L), A_t (G, N, dg), B, C."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, d, L = u.shape
    G, N = B.shape[1], B.shape[2]
    u_f = u.to(compute)
    raw = delta.to(compute)
    if delta_bias is not None:
        raw = raw + delta_bias.to(compute)[:, None]
    dt = F.softplus(raw) if delta_softplus else raw
    A_t = A.to(compute).view(G, d // G, N).transpose(1, 2).contiguous()
    grouped = (dt.view(b, G, d // G, L), (dt * u_f).view(b, G, d // G, L), A_t, B.to(compute), C.to(compute))
    return compute, u_f, raw, dt, grouped


def selective_scan_torch_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             save_for_backward=False):
    """Forward pass (mamba_ssm `selective_scan_fn` semantics); B, C (batch, G, N, L). fp32 math (fp64 for fp64 u).

    Returns:
        out (batch, dim, L) in u's dtype, the last state (batch, dim, N) in the compute dtype, and the states kept
        for ``selective_scan_torch_bwd`` (``states_shape``; empty without save_for_backward).
    """
    compute, u_f, _, _, grouped = _scan_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, L = u.shape
    y, h_last, states = _scan_forward(*grouped, save_for_backward)
    y = y.reshape(b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(u.dtype), h_last.transpose(-1, -2).reshape(b, d, -1), states


def selective_scan_torch_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, dout, dlast):
    """Backward pass from ``selective_scan_torch_fwd``'s states; dout, dlast may be None (zero).

    Returns:
        the gradients of (u, delta, A, B, C, D, z, delta_bias), each in its input's dtype, None for absent inputs.
    """
    compute, u_f, raw, dt, grouped = _scan_inputs(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dout = torch.zeros_like(u_f) if dout is None else dout.to(compute)
    grad_z = None
    if z is not None:  # out = (y + D u) silu(z)
        z_f = z.to(compute)
        sig = torch.sigmoid(z_f)
        C_r = _Layout(L, b * d * N, CHUNK_SIZE, BLOCK_ELEMENTS).to_rows(grouped[4])
        y = torch.matmul(C_r[:L, ..., None, :], states[:L]).squeeze(-2).permute(1, 2, 3, 0).reshape(b, d, L)
        if D is not None:
            y = y + D.to(compute)[:, None] * u_f
        grad_z = (dout * y * sig * (1 + z_f * (1 - sig))).to(z.dtype)
        dout = dout * z_f * sig
    grad_h_last = (torch.zeros(b, G, N, d // G, dtype=compute) if dlast is None
                   else dlast.to(compute).view(b, G, d // G, N).transpose(-1, -2))
    grad_dt, grad_x, grad_A_t, grad_B, grad_C = _scan_backward(*grouped, states, dout.view(b, G, d // G, L),
                                                               grad_h_last)
    grad_x = grad_x.reshape(b, d, L)
    grad_u = grad_x * dt
    grad_D = None
    if D is not None:
        grad_u = grad_u + dout * D.to(compute)[:, None]
        grad_D = (dout * u_f).sum((0, 2)).to(D.dtype)
    grad_delta = grad_dt.reshape(b, d, L) + grad_x * u_f
    if delta_softplus:
        grad_delta = grad_delta * torch.sigmoid(raw)
    grad_A = grad_A_t.transpose(1, 2).reshape(d, N)
    return (grad_u.to(u.dtype), grad_delta.to(delta.dtype), grad_A.to(A.dtype), grad_B.to(B.dtype),
            grad_C.to(C.dtype), grad_D, grad_z,
            grad_delta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None)
