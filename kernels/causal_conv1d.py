"""Mamba's depthwise causal conv1d followed by SiLU (the ``causal_conv1d_fn(x, weight, bias, activation="silu")`` of
the causal-conv1d package, without its CUDA build).

``causal_conv1d_silu_ref`` is ``F.conv1d`` + SiLU (any device, autograd by torch). ``causal_conv1d_silu`` runs the
numba kernels on the CPU (``causal_conv1d_numba``: one pass each way instead of a padded convolution, a slice
and an activation) as the operator ``torch.ops.medmamba.causal_conv1d_silu``, and the reference elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medmamba.kernels.backends import resolve_backend


def causal_conv1d_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``silu(conv1d(x))`` with zero padding before the start only; arguments as ``causal_conv1d_silu``."""
    taps = weight.shape[-1]
    out = F.conv1d(x, weight.view(weight.shape[0], 1, taps), bias, padding=taps - 1, groups=weight.shape[0])
    return F.silu(out[..., :x.shape[-1]])


@torch.library.custom_op("medmamba::causal_conv1d_silu", mutates_args=())
def _conv_op(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    from medmamba.kernels.causal_conv1d_numba import causal_conv1d_silu_numba_fwd

    return causal_conv1d_silu_numba_fwd(x, weight, bias)


@_conv_op.register_fake
def _(x, weight, bias):
    return torch.empty_like(x)


@torch.library.custom_op("medmamba::causal_conv1d_silu_backward", mutates_args=())
def _conv_backward_op(x: Tensor, weight: Tensor, bias: Tensor, dout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    from medmamba.kernels.causal_conv1d_numba import causal_conv1d_silu_numba_bwd

    return causal_conv1d_silu_numba_bwd(x, weight, bias, dout)


@_conv_backward_op.register_fake
def _(x, weight, bias, dout):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dout):
    return torch.ops.medmamba.causal_conv1d_silu_backward(*ctx.saved_tensors, dout)


_conv_op.register_autograd(_backward, setup_context=_setup_context)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                       backend: str = "auto") -> torch.Tensor:
    """Depthwise causal conv1d and SiLU: out[b, c, t] = silu(bias[c] + sum_k weight[c, k] x[b, c, t - (K - 1) + k]).

    Args:
        x: (B, C, L).
        weight: (C, K), or nn.Conv1d's (C, 1, K).
        bias: optional (C,).
        backend: "auto" (numba for CPU tensors when it imports, else torch), "numba" or "torch".

    Returns:
        (B, C, L) in x's dtype (the numba kernels compute in float32, float64 for float64 x).
    """
    weight = weight.reshape(weight.shape[0], weight.shape[-1]) if isinstance(weight, torch.Tensor) else weight
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or not isinstance(weight, torch.Tensor) \
            or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal_conv1d_silu: x has shape {tuple(getattr(x, 'shape', ()))} and weight "
                         f"{tuple(getattr(weight, 'shape', ()))}, expected (B, C, L) and (C, K)")
    chosen = resolve_backend("causal_conv1d", backend, x.device, supported_by_triton=False,
                             what=f"a {x.dtype} tensor; numba takes a float dtype", caller="causal_conv1d_silu",
                             supported_by_numba=x.dtype.is_floating_point)
    if chosen == "numba":
        bias = bias if bias is not None else x.new_zeros(x.shape[1])
        return torch.ops.medmamba.causal_conv1d_silu(x, weight, bias)
    return causal_conv1d_silu_ref(x, weight, bias)
