"""mamba_ssm's and causal_conv1d's functions on medmamba's kernels (no nn.Modules here).

Same names, call signatures, shapes and dtypes as ``mamba_ssm.ops.selective_scan_interface``,
``mamba_ssm.ops.triton.layer_norm``, ``mamba_ssm.ops.triton.selective_state_update`` and ``causal_conv1d``,
including the bidirectional functions of Vim's and SegMamba's forks. The fused CUDA functions become compositions
of PyTorch ops around `medmamba.kernels.selective_scan` (Triton on CUDA, numba on the CPU), so autograd
gives their backward; each ``_ref`` runs the float64 loop `medmamba.kernels.selective_scan_ref` instead.
"""
import torch
import torch.nn.functional as F

from medmamba.kernels import selective_scan
from medmamba.kernels import selective_scan_ref as _scan_ref_float64

ACTIVATIONS = (None, "silu", "swish")


def _per_channel_bc(u, A, B, C):
    """B and C for the kernels: a time-invariant (dim, N) B or C (mamba_ssm's non-selective case) becomes one
    group per channel, (batch, dim, N, L), and the other one is expanded to the same groups."""
    if A.is_complex():
        raise ValueError(f"selective_scan_fn: A is complex ({A.dtype}, shape {tuple(A.shape)}); medmamba's kernels "
                         f"scan real A only")
    if B.dim() != 2 and C.dim() != 2:
        return B, C
    batch, dim, L = u.shape

    def per_channel(t):
        if t.dim() == 2:
            return t[None, :, :, None].expand(batch, dim, t.shape[1], L)
        if t.dim() == 3:
            t = t[:, None]
        return t.repeat_interleave(dim // t.shape[1], dim=1)

    return per_channel(B), per_channel(C)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba_ssm's selective scan on `medmamba.kernels.selective_scan`.

    Args:
        u, delta: (batch, dim, L).
        A: (dim, N), real.
        B, C: (batch, N, L), (batch, G, N, L) with G dividing dim, or time-invariant (dim, N).
        D, delta_bias: optional (dim,).
        z: optional (batch, dim, L) gate, the output is multiplied by silu(z).
        delta_softplus: apply softplus to delta + delta_bias.
        return_last_state: also return the state after the last step.

    Returns:
        out (batch, dim, L) in u's dtype and, with ``return_last_state``, the last state (batch, dim, N).
    """
    B, C = _per_channel_bc(u, A, B, C)
    return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """`selective_scan_fn` computed step by step in float64 (`medmamba.kernels.selective_scan_ref`).

    Args:
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state: as `selective_scan_fn`.

    Returns:
        As `selective_scan_fn`.
    """
    B, C = _per_channel_bc(u, A, B, C)
    return _scan_ref_float64(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                     final_states_out=None, activation=None):
    """causal_conv1d's depthwise causal convolution: out_t = bias + sum_k weight[:, k] x_{t - (width - 1) + k}.

    Also accepts causal-conv1d < 1.1's ``causal_conv1d_fn(x, weight, bias, activation)`` (SegMamba's fork calls
    it so): a string in the fourth position is the activation.

    Args:
        x: (batch, dim, L).
        weight: (dim, width).
        bias: optional (dim,).
        seq_idx: not supported (must be None).
        initial_states: optional (batch, dim, width - 1), the inputs before x (zeros when None).
        return_final_states: also return the last width - 1 inputs, (batch, dim, width - 1).
        final_states_out: optional tensor the final states are written to.
        activation: None, "silu" or "swish" (the same as "silu").

    Returns:
        out (batch, dim, L) in x's dtype, and the final states with ``return_final_states``.
    """
    if isinstance(seq_idx, str):
        seq_idx, activation = None, seq_idx
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d_fn: activation={activation!r}; expected one of {ACTIVATIONS}")
    if seq_idx is not None:
        raise NotImplementedError("causal_conv1d_fn: seq_idx (packed sequences) is not supported by medmamba's shim")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d_fn: x has shape {tuple(x.shape)} and weight {tuple(weight.shape)}; "
                         f"expected (batch, dim, L) and (dim, width)")
    dim, width = weight.shape
    L = x.shape[-1]
    inputs = x.to(weight.dtype)
    if initial_states is not None:
        inputs = torch.cat([initial_states.to(weight.dtype), inputs], dim=-1)
    out = F.conv1d(inputs, weight[:, None], bias, padding=0 if initial_states is not None else width - 1,
                   groups=dim)[..., :L]
    out = (out if activation is None else F.silu(out)).to(x.dtype)
    if not return_final_states:
        return out
    final_states = F.pad(inputs, (width - 1 - inputs.shape[-1], 0)).to(x.dtype)
    if final_states_out is not None:
        final_states = final_states_out.copy_(final_states)
    return out, final_states


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, cache_seqlens=None):
    """causal_conv1d's decoding step: convolve new inputs after the ones kept in ``conv_state``, updated in place.

    Args:
        x: (batch, dim) or (batch, dim, L) new inputs.
        conv_state: (batch, dim, state_len) with state_len >= width - 1, the latest inputs; shifted in place.
        weight: (dim, width).
        bias: optional (dim,).
        activation: None, "silu" or "swish".
        cache_seqlens: not supported (must be None).

    Returns:
        out shaped like x, in x's dtype.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"causal_conv1d_update: activation={activation!r}; expected one of {ACTIVATIONS}")
    if cache_seqlens is not None:
        raise NotImplementedError("causal_conv1d_update: cache_seqlens (circular state) is not supported by "
                                  "medmamba's shim")
    single_step = x.dim() == 2
    steps = x[..., None] if single_step else x
    dim, width = weight.shape
    if conv_state.dim() != 3 or conv_state.shape[:2] != steps.shape[:2] or conv_state.shape[2] < width - 1:
        raise ValueError(f"causal_conv1d_update: conv_state has shape {tuple(conv_state.shape)}; expected "
                         f"(batch, dim, >= width - 1) = ({steps.shape[0]}, {dim}, >= {width - 1})")
    inputs = torch.cat([conv_state, steps], dim=-1).to(weight.dtype)
    conv_state.copy_(inputs[..., -conv_state.shape[2]:])
    out = F.conv1d(inputs, weight[:, None], bias, groups=dim)[..., -steps.shape[-1]:]
    out = (out if activation is None else F.silu(out)).to(x.dtype)
    return out[..., 0] if single_step else out


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           state_batch_indices=None):
    """mamba_ssm's one-token scan step, the state updated in place (float32 math, as its Triton kernel).

    Args:
        state: (batch, dim, N), updated in place.
        x, dt: (batch, dim).
        A: (dim, N).
        B, C: (batch, N).
        D, dt_bias: optional (dim,).
        z: optional (batch, dim) gate.
        dt_softplus: apply softplus to dt + dt_bias.
        state_batch_indices: not supported (must be None).

    Returns:
        out (batch, dim) in x's dtype.
    """
    if state_batch_indices is not None or state.dim() != 3:
        raise NotImplementedError(f"selective_state_update: state of shape {tuple(state.shape)}"
                                  f"{' with state_batch_indices' if state_batch_indices is not None else ''}; "
                                  f"medmamba's shim supports (batch, dim, N) states only (Mamba, not Mamba-2)")
    dt = dt.float() if dt_bias is None else dt.float() + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    decay = torch.exp(dt[..., None] * A.float())
    drive = (dt * x.float())[..., None] * B.float()[:, None]
    new_state = state.float() * decay + drive
    state.copy_(new_state)
    out = (new_state * C.float()[:, None]).sum(-1)
    if D is not None:
        out = out + D.float() * x.float()
    if z is not None:
        out = out * F.silu(z.float())
    return out.to(x.dtype)


def _rms_norm_last(t, weight, eps):
    return t * torch.rsqrt(t.square().mean(-1, keepdim=True) + eps) * weight


def _scan_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C, B_proj_bias,
                 C_proj_bias, b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None, rms_eps=1e-6):
    """The fused functions' first half: conv1d + SiLU on x, then delta, B and C projected from it.

    xz: (batch, 2 dim, L); conv1d_weight: (dim, 1, width); x_proj_weight: (rank + 2N, dim);
    delta_proj_weight: (dim, rank). Returns x, z, delta (batch, dim, L) and B, C (batch, N, L) or as given.
    """
    if xz.dim() != 3 or conv1d_weight.dim() != 3 or xz.shape[1] != 2 * conv1d_weight.shape[0]:
        raise ValueError(f"mamba_inner_fn: xz has shape {tuple(xz.shape)} and conv1d_weight "
                         f"{tuple(conv1d_weight.shape)}; expected (batch, 2 * dim, L) and (dim, 1, width)")
    x, z = xz.chunk(2, dim=1)
    x = causal_conv1d_fn(x, conv1d_weight[:, 0], conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2), x_proj_weight)  # (batch, L, rank + 2N)
    rank, N = delta_proj_weight.shape[1], A.shape[-1]
    delta = F.linear(x_dbl[..., :rank], delta_proj_weight)
    if dt_rms_weight is not None:
        delta = _rms_norm_last(delta, dt_rms_weight, rms_eps)
    if B is None:
        B = x_dbl[..., rank:rank + N]
        B = B if B_proj_bias is None else B + B_proj_bias.to(B.dtype)
        B = (B if b_rms_weight is None else _rms_norm_last(B, b_rms_weight, rms_eps)).transpose(1, 2)
    if C is None:
        C = x_dbl[..., -N:]
        C = C if C_proj_bias is None else C + C_proj_bias.to(C.dtype)
        C = (C if c_rms_weight is None else _rms_norm_last(C, c_rms_weight, rms_eps)).transpose(1, 2)
    return x, z, delta.transpose(1, 2), B, C


def _mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B=None, C=None, D=None,
                 delta_bias=None, B_proj_bias=None, C_proj_bias=None, delta_softplus=True, scan=selective_scan_fn,
                 return_last_state=False, **rms):
    """The fused Mamba inner computation up to the gated scan output (batch, dim, L), before out_proj."""
    x, z, delta, B, C = _scan_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C,
                                     B_proj_bias, C_proj_bias, **rms)
    return scan(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                return_last_state=return_last_state)


def _bimamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, A_b, B=None, C=None,
                   D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None, delta_softplus=True,
                   scan=selective_scan_fn):
    """Vim's 'v1': one conv1d and projection, scanned forward with A and backward with A_b (same D, delta_bias)."""
    x, z, delta, B, C = _scan_inputs(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C,
                                     B_proj_bias, C_proj_bias)
    forward = scan(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    B_b, C_b = (t.flip(-1) if t.dim() >= 3 else t for t in (B, C))  # time-invariant B/C have no time axis
    backward = scan(x.flip(-1), delta.flip(-1), A_b, B_b, C_b, D, z=z.flip(-1), delta_bias=delta_bias,
                    delta_softplus=delta_softplus)
    return forward + backward.flip(-1)


def _check_checkpoint_lvl(checkpoint_lvl):
    if checkpoint_lvl not in (0, 1):
        raise ValueError(f"mamba_inner_fn: checkpoint_lvl={checkpoint_lvl!r}; expected 0 or 1")


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                   out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                   delta_softplus=True, checkpoint_lvl=1, b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None,
                   b_c_dt_rms_eps=1e-6):
    """mamba_ssm's fused Mamba mixer after in_proj: conv1d, SiLU, x_proj, dt_proj, selective scan, out_proj.

    Args:
        xz: (batch, 2 * dim, L), x and the gate z stacked on the channel axis.
        conv1d_weight: (dim, 1, width); conv1d_bias: optional (dim,).
        x_proj_weight: (rank + 2N, dim); delta_proj_weight: (dim, rank).
        out_proj_weight: (d_model, dim); out_proj_bias: optional (d_model,).
        A: (dim, N). B, C: None (projected from x, the selective case) or as `selective_scan_fn`.
        D, delta_bias: optional (dim,). B_proj_bias, C_proj_bias: optional (N,) added to the projected B, C.
        delta_softplus: apply softplus to delta + delta_bias.
        checkpoint_lvl: 0 or 1, the CUDA kernel's recomputation policy; autograd keeps what it needs here.
        b_rms_weight, c_rms_weight, dt_rms_weight: optional RMS norms of B, C (N,) and delta (dim,), eps
            ``b_c_dt_rms_eps``.

    Returns:
        (batch, L, d_model).
    """
    _check_checkpoint_lvl(checkpoint_lvl)
    y = _mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C, D, delta_bias,
                     B_proj_bias, C_proj_bias, delta_softplus, b_rms_weight=b_rms_weight,
                     c_rms_weight=c_rms_weight, dt_rms_weight=dt_rms_weight, rms_eps=b_c_dt_rms_eps)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                    out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                    delta_softplus=True):
    """`mamba_inner_fn` with the float64 reference scan.

    Args:
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C,
            D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus: as `mamba_inner_fn`.

    Returns:
        (batch, L, d_model).
    """
    y = _mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C, D, delta_bias,
                     B_proj_bias, C_proj_bias, delta_softplus, scan=selective_scan_ref)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_inner_fn_no_out_proj(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B=None,
                               C=None, D=None, delta_bias=None, B_proj_bias=None, C_proj_bias=None,
                               delta_softplus=True, checkpoint_lvl=1):
    """Vim's and SegMamba's forks: `mamba_inner_fn` without out_proj.

    Args:
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C, D, delta_bias, B_proj_bias,
            C_proj_bias, delta_softplus, checkpoint_lvl: as `mamba_inner_fn`.

    Returns:
        The gated scan output (batch, dim, L).
    """
    _check_checkpoint_lvl(checkpoint_lvl)
    return _mamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, B, C, D, delta_bias,
                        B_proj_bias, C_proj_bias, delta_softplus)


def bimamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                     out_proj_bias, A, A_b, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                     C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1):
    """Vim's and SegMamba's forks ('v1'): `mamba_inner_fn` whose scan also runs backward in time with A_b.

    The conv1d output, delta, B, C and z are shared; the backward scan runs on their time-reversed copies and its
    output, reversed back, is added to the forward one before out_proj.

    Args:
        A_b: (dim, N), the backward scan's A. Others: as `mamba_inner_fn`.

    Returns:
        (batch, L, d_model).
    """
    _check_checkpoint_lvl(checkpoint_lvl)
    y = _bimamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, A_b, B, C, D,
                       delta_bias, B_proj_bias, C_proj_bias, delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def bimamba_inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                      out_proj_bias, A, A_b, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                      C_proj_bias=None, delta_softplus=True):
    """`bimamba_inner_fn` with the float64 reference scan.

    Args:
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias, A, A_b,
            B, C, D, delta_bias, B_proj_bias, C_proj_bias, delta_softplus: as `bimamba_inner_fn`.

    Returns:
        (batch, L, d_model).
    """
    y = _bimamba_inner(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, A_b, B, C, D,
                       delta_bias, B_proj_bias, C_proj_bias, delta_softplus, scan=selective_scan_ref)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def layer_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                  rowscale=None, prenorm=False, residual_in_fp32=False, is_rms_norm=False, return_dropout_mask=False):
    """mamba_ssm's fused add + LayerNorm/RMSNorm over the last axis (float32 math, as its Triton kernel).

    h = dropout(x * rowscale) + residual; out = norm(h) * weight + bias.

    Args:
        x: (..., hidden).
        weight: (hidden,); bias: optional (hidden,).
        residual: optional, shaped like x.
        x1, weight1, bias1, return_dropout_mask: not supported (must be None / False).
        eps: added to the variance (or the mean square).
        dropout_p: dropout probability on x (applied whenever > 0, as the kernel does).
        rowscale: optional (...,) scale of each row of x.
        prenorm: also return h, the new residual.
        residual_in_fp32: h is returned in float32 (else in residual's dtype, or x's without a residual).
        is_rms_norm: RMSNorm (no mean subtraction) instead of LayerNorm.

    Returns:
        out in x's dtype, and h with ``prenorm``.
    """
    if x1 is not None or weight1 is not None or bias1 is not None or return_dropout_mask:
        raise NotImplementedError("layer_norm_fn: x1, weight1, bias1 and return_dropout_mask (parallel norms, "
                                  "dropout masks) are not supported by medmamba's shim")
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(compute)
    if rowscale is not None:
        h = h * rowscale.to(compute)[..., None]
    if dropout_p > 0.0:
        h = F.dropout(h, dropout_p)
    if residual is not None:
        h = h + residual.to(compute)
    if is_rms_norm:
        normed = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)
    else:
        centred = h - h.mean(-1, keepdim=True)
        normed = centred * torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    out = normed * weight.to(compute)
    if bias is not None:
        out = out + bias.to(compute)
    out = out.to(x.dtype)
    if not prenorm:
        return out
    residual_dtype = residual.dtype if residual is not None else torch.float32 if residual_in_fp32 else x.dtype
    return out, h.to(residual_dtype)


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    """`layer_norm_fn` with ``is_rms_norm=True``.

    Args:
        x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm, residual_in_fp32,
            return_dropout_mask: as `layer_norm_fn`.

    Returns:
        As `layer_norm_fn`.
    """
    return layer_norm_fn(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm,
                         residual_in_fp32, True, return_dropout_mask)
