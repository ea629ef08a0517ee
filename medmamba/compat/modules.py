"""mamba_ssm's nn.Modules on medmamba's kernels: the Mamba mixer (with Vim's and SegMamba's bidirectional
variants) and RMSNorm, with the same constructor arguments, parameter names and shapes as their official code."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from medmamba.compat.ops import (
    _bimamba_inner,
    _mamba_inner,
    causal_conv1d_update,
    rms_norm_fn,
    selective_state_update,
)

BIMAMBA_TYPES = ("none", "v1", "v2", "v3")


class Mamba(nn.Module):
    """mamba_ssm's ``Mamba`` (``mamba_ssm.modules.mamba_simple``) on (batch, L, d_model) tokens.

    ``bimamba_type`` selects the forks' variants: "none" (or None, upstream mamba_ssm); "v1" (Vim's fork: the
    same conv1d and projections scanned forward with A and backward with A_b); "v2" (Vim's fork: a backward
    direction with its own conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b, summed with the forward one, halved when
    ``if_divide_out``); "v3" (SegMamba's fork: "v2" plus a direction _s scanning the sequence cut into ``nslices``
    equal slices and interleaved, position s * (L / nslices) + i read at i * nslices + s). ``init_layer_scale``
    (Vim) multiplies the output by a learned ``gamma`` (d_model,).

    Parameters are created in the official order with the official initialisation (so a seed gives the same
    weights); as in the forks, the extra directions' dt_proj keep nn.Linear's default initialisation. The forward
    pass is the official fused path's math whatever ``use_fast_path`` says (the forks' unfused path silently runs
    the forward direction only). ``inference_params`` (token-by-token decoding through ``step``) is supported for
    bimamba_type "none".
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False, use_fast_path=True,
                 layer_idx=None, device=None, dtype=None, bimamba_type="none", if_divide_out=False,
                 init_layer_scale=None, nslices=5):
        bimamba_type = "none" if bimamba_type is None else bimamba_type
        if bimamba_type not in BIMAMBA_TYPES:
            raise ValueError(f"Mamba: bimamba_type={bimamba_type!r}; expected None or one of {BIMAMBA_TYPES}")
        if dt_init not in ("constant", "random"):
            raise ValueError(f"Mamba: dt_init={dt_init!r}; expected 'constant' or 'random'")
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path, self.layer_idx = use_fast_path, layer_idx
        self.bimamba_type, self.if_divide_out, self.nslices = bimamba_type, if_divide_out, nslices
        self.init_layer_scale = init_layer_scale
        if init_layer_scale is not None:
            self.gamma = nn.Parameter(init_layer_scale * torch.ones(d_model, device=device))
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory_kwargs)
        self._add_direction("", conv_bias, factory_kwargs)
        self.activation = "silu"
        self.act = nn.SiLU()  # unused here, kept so the module tree matches the official one
        self._init_dt_proj(dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory_kwargs)
        self.A_log, self.D = self._a_log(device), self._ones(device)
        if bimamba_type == "v1":
            self.A_b_log = self._a_log(device)
        for suffix in {"v2": ("_b",), "v3": ("_b", "_s")}.get(bimamba_type, ()):
            setattr(self, f"A{suffix}_log", self._a_log(device))
            self._add_direction(suffix, conv_bias, factory_kwargs)
            setattr(self, "D" + suffix, self._ones(device))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def _add_direction(self, suffix, conv_bias, factory_kwargs):
        """conv1d{suffix}, x_proj{suffix}, dt_proj{suffix}: one scan direction's depthwise conv and projections."""
        setattr(self, "conv1d" + suffix, nn.Conv1d(self.d_inner, self.d_inner, self.d_conv, groups=self.d_inner,
                                                   padding=self.d_conv - 1, bias=conv_bias, **factory_kwargs))
        setattr(self, "x_proj" + suffix, nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False,
                                                   **factory_kwargs))
        setattr(self, "dt_proj" + suffix, nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs))

    def _init_dt_proj(self, dt_init, dt_scale, dt_min, dt_max, dt_init_floor, factory_kwargs):
        """dt_proj: weight within +-dt_rank^-0.5 * dt_scale; bias such that softplus(bias) is log-uniform in
        [dt_min, dt_max] (floored at dt_init_floor), marked _no_reinit for the models' weight init."""
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        else:
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_span = math.log(dt_max) - math.log(dt_min)
        dt = torch.exp(torch.rand(self.d_inner, **factory_kwargs) * log_span + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # the inverse of softplus
        self.dt_proj.bias._no_reinit = True

    def _a_log(self, device):
        """S4D-real initialisation, log(1..d_state) per channel, kept in float32."""
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).expand(self.d_inner, -1)
        A_log = nn.Parameter(torch.log(A).contiguous())
        A_log._no_weight_decay = True
        return A_log

    def _ones(self, device):
        """The skip weight D, ones, kept in float32."""
        D = nn.Parameter(torch.ones(self.d_inner, device=device))
        D._no_weight_decay = True
        return D

    def forward(self, hidden_states, inference_params=None):
        """Mix (batch, L, d_model) tokens.

        Args:
            hidden_states: (batch, L, d_model).
            inference_params: optional ``mamba_ssm.utils.generation.InferenceParams``: with seqlen_offset 0 the
                sequence is processed and this layer's states are stored in it (under layer_idx); after that each
                call takes one token (bimamba_type "none" only).

        Returns:
            (batch, L, d_model).
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba: hidden_states has shape {tuple(hidden_states.shape)}; expected "
                             f"(batch, L, d_model={self.d_model})")
        if inference_params is None:
            out = self._mix(self.in_proj(hidden_states).transpose(1, 2))
        else:
            out = self._decode(hidden_states, inference_params)
        return out if self.init_layer_scale is None else out * self.gamma

    def _direction(self, xz, suffix="", return_last_state=False):
        """One scan direction with the parameters named with ``suffix`` on xz (batch, 2 d_inner, L): the gated
        scan output (batch, d_inner, L), and the last state with ``return_last_state``."""
        conv, x_proj, dt_proj = (getattr(self, name + suffix) for name in ("conv1d", "x_proj", "dt_proj"))
        A = -torch.exp(getattr(self, f"A{suffix}_log").float())
        return _mamba_inner(xz, conv.weight, conv.bias, x_proj.weight, dt_proj.weight, A,
                            D=getattr(self, "D" + suffix).float(), delta_bias=dt_proj.bias.float(),
                            return_last_state=return_last_state)

    def _mix(self, xz):
        """xz (batch, 2 d_inner, L) -> (batch, L, d_model) through every direction of bimamba_type."""
        if self.bimamba_type == "v1":
            y = _bimamba_inner(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                               -torch.exp(self.A_log.float()), -torch.exp(self.A_b_log.float()), D=self.D.float(),
                               delta_bias=self.dt_proj.bias.float())
        else:
            y = self._direction(xz)
        if self.bimamba_type in ("v2", "v3"):
            y = y + self._direction(xz.flip(-1), "_b").flip(-1)
        if self.bimamba_type == "v3":
            y = y + self._unslice(self._direction(self._slice(xz), "_s"))
        if self.bimamba_type == "v2" and self.if_divide_out:
            y = y / 2
        return self.out_proj(y.transpose(1, 2))

    def _slice(self, t):
        """(..., L) -> (..., L): nslices consecutive slices interleaved (SegMamba's inter-slice order)."""
        L = t.shape[-1]
        if L % self.nslices:
            raise ValueError(f"Mamba(bimamba_type='v3'): sequence length {L} is not divisible by "
                             f"nslices={self.nslices}")
        return t.unflatten(-1, (self.nslices, L // self.nslices)).transpose(-1, -2).flatten(-2)

    def _unslice(self, t):
        """The inverse of `_slice`."""
        return t.unflatten(-1, (t.shape[-1] // self.nslices, self.nslices)).transpose(-1, -2).flatten(-2)

    def _decode(self, hidden_states, inference_params):
        if self.bimamba_type != "none":
            raise NotImplementedError(f"Mamba(bimamba_type={self.bimamba_type!r}): inference_params (recurrent "
                                      f"decoding) needs a causal mixer, bimamba_type='none'")
        conv_state, ssm_state = self._get_states_from_cache(inference_params, hidden_states.shape[0])
        if inference_params.seqlen_offset > 0:
            return self.step(hidden_states, conv_state, ssm_state)[0]
        xz = self.in_proj(hidden_states).transpose(1, 2)
        conv_state.copy_(F.pad(xz[:, :self.d_inner], (self.d_conv - xz.shape[-1], 0)))  # the last d_conv inputs
        y, last_state = self._direction(xz, return_last_state=True)
        ssm_state.copy_(last_state)
        return self.out_proj(y.transpose(1, 2))

    def step(self, hidden_states, conv_state, ssm_state):
        """One decoding step (bimamba_type "none").

        Args:
            hidden_states: (batch, 1, d_model).
            conv_state: (batch, d_inner, d_conv), the latest conv inputs, updated in place.
            ssm_state: (batch, d_inner, d_state), updated in place.

        Returns:
            out (batch, 1, d_model) (before ``gamma``), conv_state, ssm_state.
        """
        if hidden_states.shape[1] != 1:
            raise ValueError(f"Mamba.step: hidden_states has shape {tuple(hidden_states.shape)}; expected one token, "
                             f"(batch, 1, d_model)")
        x, z = self.in_proj(hidden_states[:, 0]).chunk(2, dim=-1)
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight[:, 0], self.conv1d.bias, self.activation)
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        y = selective_state_update(ssm_state, x, F.linear(dt, self.dt_proj.weight), -torch.exp(self.A_log.float()),
                                   B, C, self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True)
        return self.out_proj(y)[:, None], conv_state, ssm_state

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Zero conv and SSM states for `step`.

        Args:
            batch_size: rows of the states.
            max_seqlen: unused (the states do not grow).
            dtype: the states' dtype (default: conv1d's and dt_proj's weight dtypes).

        Returns:
            conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state).
        """
        device = self.out_proj.weight.device
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device,
                                 dtype=self.conv1d.weight.dtype if dtype is None else dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                dtype=self.dt_proj.weight.dtype if dtype is None else dtype)
        return conv_state, ssm_state

    def _get_states_from_cache(self, inference_params, batch_size, initialize_states=False):
        if self.layer_idx is None:
            raise ValueError("Mamba: inference_params needs layer_idx, this layer's key in the cache")
        states = inference_params.key_value_memory_dict
        if self.layer_idx not in states:
            states[self.layer_idx] = self.allocate_inference_cache(batch_size, 0)
        elif initialize_states:
            for state in states[self.layer_idx]:
                state.zero_()
        return states[self.layer_idx]


class RMSNorm(nn.Module):
    """mamba_ssm's RMSNorm (``mamba_ssm.ops.triton.layer_norm``): weight (hidden_size,), bias None; ``forward``
    optionally adds a residual first and returns it (see `medmamba.compat.ops.layer_norm_fn`)."""

    def __init__(self, hidden_size, eps=1e-5, dropout_p=0.0, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.drop = nn.Dropout(dropout_p) if dropout_p > 0.0 else None
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def reset_parameters(self):
        """Weight back to ones."""
        nn.init.ones_(self.weight)

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        """Normalise x (+ residual) over the last axis.

        Args:
            x: (..., hidden_size).
            residual: optional, shaped like x, added first.
            prenorm: also return the sum.
            residual_in_fp32: return the sum in float32.

        Returns:
            out, and the sum with ``prenorm``.
        """
        dropout_p = self.drop.p if self.drop is not None and self.training else 0.0
        return rms_norm_fn(x, self.weight, self.bias, residual=residual, eps=self.eps, dropout_p=dropout_p,
                           prenorm=prenorm, residual_in_fp32=residual_in_fp32)
