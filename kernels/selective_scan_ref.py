"""Reference selective scan: the plain recurrence, one time step at a time, in float64.

Slow and exact; every fast backend is tested against it (as mamba_ssm ships ``selective_scan_ref`` beside
``selective_scan_fn``).
"""
import torch
import torch.nn.functional as F


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The selective scan of ``medmamba.kernels.selective_scan``, computed step by step in float64.

    Args:
        u: (batch, dim, L) input.
        delta: (batch, dim, L) time steps before ``delta_bias`` and softplus.
        A: (dim, N) real state matrix (diagonal per channel).
        B, C: (batch, G, N, L) with G dividing dim (channel d uses group d // (dim // G)), or (batch, N, L).
        D: optional (dim,) skip weight.
        z: optional (batch, dim, L) gate: the output is multiplied by silu(z).
        delta_bias: optional (dim,) added to delta.
        delta_softplus: apply softplus to delta + delta_bias.
        return_last_state: also return the state after the last step.

    Returns:
        out (batch, dim, L) in u's dtype and, with ``return_last_state``, the last state (batch, dim, N) in float32
        (float64 for float64 u), as the fast backends return them.
    """
    dtype = u.dtype
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, L = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    group_of_channel = torch.arange(dim, device=u.device) // (dim // B.shape[1])
    B, C = B[:, group_of_channel], C[:, group_of_channel]  # (batch, dim, N, L)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    out = torch.stack(ys, -1)
    if D is not None:
        out = out + D.double()[:, None] * u
    if z is not None:
        out = out * F.silu(z.double())
    out = out.to(dtype)
    if not return_last_state:
        return out
    return out, h.to(torch.float64 if dtype == torch.float64 else torch.float32)
