"""Selective scan in pure PyTorch (the CPU path): a chunk-parallel exact recurrence with a hand-written backward.

L is cut into n_c chunks of T steps (T about sqrt(L)), laid out time-major, (T, batch, n_c, G, N, dg), so that
step t of every chunk is one contiguous slab and one in-place multiply-add advances all chunks at once:

1. a_t = exp(dt_t A) and the drive dt_t u_t B_t for every step (one pass each);
2. every chunk's end state from a zero start (T multiply-adds over a (batch, n_c, G, N, dg) state);
3. the state carried into each chunk, from those and the chunk decays exp(A sum(dt)) (n_c small steps);
4. the states again from the carried-in states, in place over the drive (T multiply-adds), read out by a
   batched matmul with C.

Python loops run over T and n_c, never over L; every step is the recurrence itself, so nothing can overflow
that the recurrence does not. Forward keeps only the states for backward, which runs the same scan in reverse
for the adjoint state and forms every gradient from it with one pass or one batched matmul each.
Inputs are expected already validated and normalised by `medmamba.kernels.selective_scan`.
"""
import math
import threading

import torch
import torch.nn.functional as F

# floats in one block's buffers (decays, states): a block's two buffers stay in a CPU's L2/L3 cache
BLOCK_ELEMENTS = 2 ** 20


class _Layout:
    """Time-major chunked layout (T, batch, n_chunks, G, C) of (batch, G, C, L) tensors, cut into blocks of chunks.

    per_step: batch * dim * N, the state size; a block holds as many chunks as keep a (T, batch, chunks, G, N, dg)
    buffer within block_elements, and T is the power of two nearest sqrt(block steps / 2), which balances the
    T-step and chunk loops inside a block.
    """

    def __init__(self, L: int, per_step: int, chunk_size: int | None = None, block_elements: int = BLOCK_ELEMENTS):
        block_steps = min(L, max(1, block_elements // per_step))
        self.L = L
        self.T = chunk_size or 2 ** max(0, round(math.log2(math.sqrt(block_steps / 2))))
        self.n_chunks = -(-L // self.T)
        self.pad = self.n_chunks * self.T - L
        per_block = max(1, block_steps // self.T)
        self.blocks = [slice(k, min(k + per_block, self.n_chunks)) for k in range(0, self.n_chunks, per_block)]

    def to_chunks(self, t: torch.Tensor) -> torch.Tensor:
        b, G, C, _ = t.shape
        t = F.pad(t, (0, self.pad))  # padded steps have dt = 0 and zero drive: they keep the state
        t = _transpose_matrices(t).view(b, G, self.n_chunks, self.T, C)
        return t.permute(3, 0, 2, 1, 4).contiguous()  # whole rows of C move: a cheap copy

    def from_chunks(self, t: torch.Tensor) -> torch.Tensor:
        T, b, n_c, G, C = t.shape
        t = t.permute(1, 3, 2, 0, 4).reshape(b, G, n_c * T, C)
        return _transpose_matrices(t[:, :, :self.L])


def _transpose_matrices(t: torch.Tensor) -> torch.Tensor:
    """(b, G, m, n) -> contiguous (b, G, n, m), one 2-D copy per matrix: torch's blocked transpose kernel serves
    2-D copies only, and a 4-D transposing copy is several times slower."""
    b, G, m, n = t.shape
    out = torch.empty(b, G, n, m, dtype=t.dtype, device=t.device)
    for src, dst in zip(t.reshape(b * G, m, n), out.view(b * G, n, m)):
        dst.copy_(src.t())
    return out


_scratch = threading.local()


def _buffer(shape: torch.Size, like: torch.Tensor, slot: str | None) -> torch.Tensor:
    """An uninitialised contiguous tensor. With a slot, on CPU, the memory is reused across blocks and calls (one
    buffer per slot and thread): touching fresh pages costs more than the arithmetic done on them."""
    if slot is None or like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key, numel = (slot, like.dtype), math.prod(shape)
    if key not in buffers or buffers[key].numel() < numel:
        buffers[key] = torch.empty(numel, dtype=like.dtype)
    return buffers[key][:numel].view(shape)


def _product(a: torch.Tensor, b: torch.Tensor, slot: str | None = None) -> torch.Tensor:
    """a * b broadcast into a contiguous tensor (a plain mul may follow a broadcast operand's odd strides)."""
    return torch.mul(a, b, out=_buffer(torch.broadcast_shapes(a.shape, b.shape), a, slot))


def _decays(dt_c: torch.Tensor, A_t: torch.Tensor, slot: str | None = None) -> torch.Tensor:
    """exp(dt A) per step: dt_c (..., G, dg), A_t (G, N, dg) -> (..., G, N, dg).

    Exponents are floored where the decay would fall below the smallest normal float (about 1e-38 in fp32): CPU
    exp takes a slow path, up to 100x slower, for results that underflow, and a chunk's decay often does."""
    floor = math.log(torch.finfo(dt_c.dtype).tiny) + 1
    return _product(dt_c[..., None, :], A_t, slot).clamp_(min=floor).exp_()


def _next_step(t_c: torch.Tensor) -> torch.Tensor:
    """The chunked tensor one global step later (zero after the last step)."""
    out = torch.zeros_like(t_c)
    out[:-1] = t_c[1:]
    out[-1, :, :-1] = t_c[0, :, 1:]
    return out


def _scan_(decay: torch.Tensor, states: torch.Tensor, chunk_decay: torch.Tensor, h_in: torch.Tensor | None,
           reverse: bool) -> torch.Tensor:
    """In place: states[t] = states[t] + decay[t] * states[t -+ 1] along every chunk and across chunks.

    decay, states: (T, b, n_c, G, N, dg), states holding the drive on entry; chunk_decay: (b, n_c, G, N, dg), the
    product of a chunk's decays; h_in: the state entering the sequence (None: zero). Returns the leaving state.
    """
    T, n_c = states.shape[0], states.shape[2]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    chunk_order = range(n_c - 1, -1, -1) if reverse else range(n_c)
    decay_steps, state_steps = decay.unbind(0), states.unbind(0)
    # every chunk's leaving state from a zero start
    local = state_steps[steps[0]].clone()
    for t in steps[1:]:
        torch.addcmul(state_steps[t], decay_steps[t], local, out=local)
    # the state entering each chunk
    entering = torch.empty_like(local)
    h = torch.zeros_like(local[:, 0]) if h_in is None else h_in
    for k in chunk_order:
        entering[:, k] = h
        h = torch.addcmul(local[:, k], chunk_decay[:, k], h)
    # the states from the entering states
    state_steps[steps[0]].addcmul_(decay_steps[steps[0]], entering)
    for prev, t in zip(steps[:-1], steps[1:]):
        state_steps[t].addcmul_(decay_steps[t], state_steps[prev])
    return h


def _chunk_decays(dt_c: torch.Tensor, A_t: torch.Tensor) -> torch.Tensor:
    """exp(A sum(dt)) over each chunk: (b, n_c, G, N, dg)."""
    return _decays(dt_c.sum(0), A_t)


class _SelectiveScan(torch.autograd.Function):
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + x_t B_t (x = dt u) on (b, G, dg, L) inputs; also returns h_L.

    Blocks of chunks run one after another, the state carried between them, so that each block's buffers stay in
    cache; with keep_states the block states are saved for backward (the only (b, dim, N, L)-sized memory kept).
    """

    @staticmethod
    def forward(ctx, dt, x, A_t, B, C, chunk_size, block_elements, keep_states):
        # dt, x: (b, G, dg, L); A_t: (G, N, dg); B, C: (b, G, N, L)
        b, G, dg, L = dt.shape
        layout = _Layout(L, b * G * dg * A_t.shape[1], chunk_size, block_elements)
        dt_c, x_c, B_c, C_c = (layout.to_chunks(t) for t in (dt, x, B, C))
        y_c = torch.empty_like(x_c)
        h = None
        block_states = []
        for blk in layout.blocks:
            dt_b = dt_c[:, :, blk]
            states = _product(x_c[:, :, blk, :, None, :], B_c[:, :, blk, :, :, None],
                              slot=None if keep_states else "states")
            h = _scan_(_decays(dt_b, A_t, "decay"), states, _chunk_decays(dt_b, A_t), h, reverse=False)
            y_c[:, :, blk] = torch.matmul(C_c[:, :, blk, :, None, :], states).squeeze(-2)
            if keep_states:
                block_states.append(states)
        ctx.layout = layout
        if keep_states:
            ctx.save_for_backward(A_t, dt_c, x_c, B_c, C_c, *block_states)
        return layout.from_chunks(y_c), h

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        A_t, dt_c, x_c, B_c, C_c, *block_states = ctx.saved_tensors
        layout = ctx.layout
        gy_c = layout.to_chunks(grad_y.to(x_c.dtype))
        dt_next_c = _next_step(dt_c)
        grads = {name: torch.empty_like(t) for name, t in (("dt", dt_c), ("x", x_c), ("B", B_c), ("C", C_c))}
        grad_A = torch.zeros_like(A_t)
        # adjoint state: g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1}, entering from the end with grad_h_last
        g = grad_h_last.to(x_c.dtype)
        for i in range(len(layout.blocks) - 1, -1, -1):
            blk, states = layout.blocks[i], block_states[i]
            dt_next_b, gy_b = dt_next_c[:, :, blk], gy_c[:, :, blk]
            decay_next = _decays(dt_next_b, A_t, "decay")
            adjoint = _product(C_c[:, :, blk, :, :, None], gy_b[..., None, :], "adjoint")
            g = _scan_(decay_next, adjoint, _chunk_decays(dt_next_b, A_t), g, reverse=True)
            grads["C"][:, :, blk] = torch.matmul(states, gy_b[..., None]).squeeze(-1)
            grads["x"][:, :, blk] = torch.matmul(B_c[:, :, blk, :, None, :], adjoint).squeeze(-2)
            grads["B"][:, :, blk] = torch.matmul(adjoint, x_c[:, :, blk, :, :, None]).squeeze(-1)
            # the decay's gradient, adjoint_t * exp(dt_t A) * h_{t-1}: both factors are the previous global step of
            # decay_next and states (within a chunk t - 1, at a chunk's first step the previous chunk's last)
            decay_grad = adjoint
            decay_grad[1:].mul_(decay_next[:-1]).mul_(states[:-1])
            decay_grad[0, :, 1:].mul_(decay_next[-1, :, :-1]).mul_(states[-1, :, :-1])
            if i == 0:
                decay_grad[0, :, 0] = 0  # h_{-1} = 0
            else:  # the block's first step: the previous block's last state
                decay_grad[0, :, 0].mul_(_decays(dt_c[0, :, blk.start], A_t)).mul_(block_states[i - 1][-1, :, -1])
            grads["dt"][:, :, blk] = torch.mul(decay_grad, A_t, out=decay_next).sum(-2)
            grad_A += decay_grad.mul_(dt_c[:, :, blk, :, None, :]).sum((0, 1, 2))
        return (*(layout.from_chunks(grads[name]) for name in ("dt", "x")), grad_A, layout.from_chunks(grads["B"]),
                layout.from_chunks(grads["C"]), None, None, None)


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, chunk_size=None, block_elements=BLOCK_ELEMENTS):
    """mamba_ssm `selective_scan_fn` semantics; B, C must be 4-D (batch, G, N, L). fp32 math (fp64 for fp64 u).
    chunk_size and block_elements override the layout's choices (tests use them to cross many boundaries)."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, d, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dg = d // G
    u_f = u.to(compute)
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A_t = A.to(compute).view(G, dg, N).transpose(1, 2).contiguous()
    args = (dt.view(b, G, dg, L), (dt * u_f).view(b, G, dg, L), A_t, B.to(compute), C.to(compute))
    keep_states = torch.is_grad_enabled() and any(t.requires_grad for t in args)
    y, h_last = _SelectiveScan.apply(*args, chunk_size, block_elements, keep_states)
    y = y.reshape(b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(compute))
    out = y.to(u.dtype)
    return (out, h_last.transpose(-1, -2).reshape(b, d, N)) if return_last_state else out
