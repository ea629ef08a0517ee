"""medmamba.compat: the mamba_ssm / causal_conv1d shim against references written out here from mamba_ssm's
documented formulas (a causal depthwise conv loop, the scan recurrence one step at a time in float64), and the
Mamba variants' parameter names and shapes as the official code (upstream, Vim's and SegMamba's forks) has them.
"""
import importlib
import importlib.util
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import medmamba.compat
from medmamba.compat import install_mamba_ssm

SHIMMED = ("mamba_ssm", "causal_conv1d")


def _shimmed_entries():
    return {name: module for name, module in sys.modules.items() if name.split(".")[0] in SHIMMED}


@pytest.fixture
def clean_modules():
    """No mamba_ssm / causal_conv1d modules during the test; sys.modules restored after it."""
    saved = _shimmed_entries()
    for name in saved:
        del sys.modules[name]
    yield
    for name in _shimmed_entries():
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def shim(clean_modules):
    return install_mamba_ssm(force=True)


# ---------------------------------------------------------------------------------------------------------------
# Independent references


def loop_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = <C_t, h_t> + D u_t, times silu(z_t): one step at a time in
    float64. B, C: (dim, N), (batch, N, L) or (batch, G, N, L). Returns (out, last state)."""
    u, delta, A = u.double(), delta.double(), A.double()
    batch, dim, L = u.shape

    def at_step(M, t):  # (batch, dim, N) for step t
        M = M.double()
        if M.dim() == 2:
            return M.expand(batch, dim, M.shape[1])
        if M.dim() == 3:
            return M[:, None, :, t].expand(batch, dim, M.shape[1])
        group_of_channel = [d // (dim // M.shape[1]) for d in range(dim)]
        return M[:, group_of_channel, :, t]

    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.log1p(torch.exp(delta))
    h = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * at_step(B, t) * u[:, :, t, None]
        y = (h * at_step(C, t)).sum(-1)
        if D is not None:
            y = y + D.double() * u[:, :, t]
        if z is not None:
            y = y * z[:, :, t].double() * torch.sigmoid(z[:, :, t].double())
        ys.append(y)
    return torch.stack(ys, -1), h


def loop_causal_conv(x, weight, bias=None, silu=False, initial_states=None):
    """out_t = bias + sum_k weight[:, k] x_{t - (width - 1) + k}, earlier inputs from initial_states (or zero)."""
    batch, dim, L = x.shape
    width = weight.shape[1]
    history = torch.zeros(batch, dim, width - 1) if initial_states is None else initial_states
    padded = torch.cat([history.double(), x.double()], -1)
    outs = []
    for t in range(L):
        out = sum(weight[:, k].double() * padded[:, :, t + k] for k in range(width))
        if bias is not None:
            out = out + bias.double()
        outs.append(out * torch.sigmoid(out) if silu else out)
    return torch.stack(outs, -1)


def rms(t, weight, eps):
    return t / torch.sqrt(t.square().mean(-1, keepdim=True) + eps) * weight


def reference_inner(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, dt_bias, A_b=None, B_bias=None, C_bias=None,
                    b_rms=None, c_rms=None, dt_rms=None, eps=1e-6):
    """mamba_ssm's fused inner function before out_proj, from its documented steps; A_b adds Vim's 'v1' backward
    scan over the same conv output, delta, B, C and z."""
    dim = conv_w.shape[0]
    x, z = xz[:, :dim].double(), xz[:, dim:].double()
    x = loop_causal_conv(x, conv_w[:, 0], conv_b, silu=True)
    rank, N = dt_proj_w.shape[1], A.shape[1]
    dbl = torch.einsum("bdl,rd->blr", x, x_proj_w.double())
    delta = torch.einsum("blr,dr->bld", dbl[..., :rank], dt_proj_w.double())
    B, C = dbl[..., rank:rank + N], dbl[..., rank + N:]
    if B_bias is not None:
        B, C = B + B_bias.double(), C + C_bias.double()
    if b_rms is not None:
        B, C, delta = rms(B, b_rms.double(), eps), rms(C, c_rms.double(), eps), rms(delta, dt_rms.double(), eps)
    delta, B, C = delta.transpose(1, 2), B.transpose(1, 2), C.transpose(1, 2)
    y = loop_scan(x, delta, A, B, C, D, z, dt_bias, True)[0]
    if A_b is not None:
        back = loop_scan(x.flip(-1), delta.flip(-1), A_b, B.flip(-1), C.flip(-1), D, z.flip(-1), dt_bias, True)[0]
        y = y + back.flip(-1)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Registration

PAPERS_IMPORTS = [
    "from mamba_ssm import Mamba",  # U-Mamba, SegMamba, LightM-UNet
    "from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref",  # VMamba family
    "from mamba_ssm.modules.mamba_simple import Mamba",  # Vim
    "from mamba_ssm.utils.generation import GenerationMixin",
    "from mamba_ssm.utils.hf import load_config_hf, load_state_dict_hf",
    "from mamba_ssm.ops.triton.layer_norm import RMSNorm, layer_norm_fn, rms_norm_fn",
    # the forks' own mamba_simple.py
    "from causal_conv1d import causal_conv1d_fn, causal_conv1d_update",
    "from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, mamba_inner_fn, bimamba_inner_fn, "
    "mamba_inner_fn_no_out_proj",
    "from mamba_ssm.ops.triton.selective_state_update import selective_state_update",
    # their tests
    "from causal_conv1d.causal_conv1d_interface import causal_conv1d_fn, causal_conv1d_update",
    "from mamba_ssm.ops.selective_scan_interface import mamba_inner_ref, bimamba_inner_ref",
    "from mamba_ssm.utils.generation import InferenceParams",
]


def test_the_papers_imports_resolve_to_the_shim(shim):
    assert set(shim) == {name for table in medmamba.compat.SHIM_MODULES.values() for name in table}
    for line in PAPERS_IMPORTS:
        exec(line, {})
    import mamba_ssm.ops.triton.layer_norm

    assert mamba_ssm.Mamba is importlib.import_module("mamba_ssm.modules.mamba_simple").Mamba
    assert mamba_ssm.ops.triton.layer_norm.RMSNorm is medmamba.compat.modules.RMSNorm
    assert importlib.util.find_spec("mamba_ssm.ops").origin == "medmamba.compat"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mamba_ssm.models.mixer_seq_simple")
    assert install_mamba_ssm() == [] and install_mamba_ssm(force=True) == []  # idempotent
    with pytest.raises(NotImplementedError, match="text generation"):
        mamba_ssm.utils.generation.GenerationMixin().generate(None, 10)


def test_install_keeps_importable_packages_and_replaces_broken_ones(clean_modules):
    real_conv = types.ModuleType("causal_conv1d")
    leftover = types.ModuleType("mamba_ssm.ops.triton.layer_norm")  # from a partly failed import
    sys.modules.update({"causal_conv1d": real_conv, "mamba_ssm": None, "mamba_ssm.ops.triton.layer_norm": leftover})
    registered = install_mamba_ssm()  # mamba_ssm does not import (None), causal_conv1d does
    assert registered == list(medmamba.compat.SHIM_MODULES["mamba_ssm"])
    assert sys.modules["causal_conv1d"] is real_conv
    assert sys.modules["mamba_ssm.ops.triton.layer_norm"] is not leftover
    assert install_mamba_ssm(force=True) == list(medmamba.compat.SHIM_MODULES["causal_conv1d"])
    from causal_conv1d import causal_conv1d_fn

    assert causal_conv1d_fn is medmamba.compat.ops.causal_conv1d_fn


# ---------------------------------------------------------------------------------------------------------------
# Functions


def randn(*shape, scale=1.0, gen):
    return torch.randn(*shape, generator=gen) * scale


# B and C layouts: (batch, N, L), (batch, G, N, L), time-invariant (dim, N) with a selective C, both invariant.
BC_LAYOUTS = {
    "3d": lambda b, d, n, L, gen: (randn(b, n, L, gen=gen), randn(b, n, L, gen=gen)),
    "groups": lambda b, d, n, L, gen: (randn(b, 2, n, L, gen=gen), randn(b, 2, n, L, gen=gen)),
    "B_invariant": lambda b, d, n, L, gen: (randn(d, n, gen=gen), randn(b, n, L, gen=gen)),
    "both_invariant": lambda b, d, n, L, gen: (randn(d, n, gen=gen), randn(d, n, gen=gen)),
}


@pytest.mark.parametrize("layout", BC_LAYOUTS)
@pytest.mark.parametrize("with_extras", [True, False], ids=["D_z_bias_softplus", "plain"])
def test_selective_scan_fn_and_ref_match_the_recurrence(shim, layout, with_extras):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref

    gen = torch.Generator().manual_seed(1)
    b, d, n, L = 2, 6, 3, 11
    u, delta = randn(b, d, L, gen=gen), torch.rand(b, d, L, generator=gen)
    A = -torch.rand(d, n, generator=gen) - 0.2
    B, C = BC_LAYOUTS[layout](b, d, n, L, gen)
    extras = dict(D=randn(d, gen=gen), z=randn(b, d, L, gen=gen), delta_bias=randn(d, scale=0.5, gen=gen),
                  delta_softplus=True) if with_extras else {}
    expected, expected_state = loop_scan(u, delta, A, B, C, **extras)
    for fn, tol in ((selective_scan_fn, 1e-5), (selective_scan_ref, 1e-6)):
        out, state = fn(u, delta, A, B, C, **extras, return_last_state=True)
        assert out.dtype == torch.float32 and out.shape == (b, d, L) and state.shape == (b, d, n)
        torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)
        torch.testing.assert_close(state.double(), expected_state, rtol=tol, atol=tol)


def test_selective_scan_fn_rejects_complex_A(shim):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    u = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="complex"):
        selective_scan_fn(u, u, torch.randn(2, 3, dtype=torch.complex64), torch.randn(1, 3, 5), torch.randn(1, 3, 5))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_conv1d_fn_matches_the_conv_loop(shim, bias, activation):
    from causal_conv1d import causal_conv1d_fn

    gen = torch.Generator().manual_seed(2)
    x, weight = randn(2, 5, 9, gen=gen), randn(5, 4, gen=gen)
    b = randn(5, gen=gen) if bias else None
    expected = loop_causal_conv(x, weight, b, silu=activation is not None)
    close = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal_conv1d_fn(x, weight, b, activation=activation).double(), expected, **close)
    legacy_order = causal_conv1d_fn(x, weight, b, activation) if activation else causal_conv1d_fn(x, weight, b)
    torch.testing.assert_close(legacy_order.double(), expected, **close)  # causal-conv1d < 1.1: activation 4th

    initial = randn(2, 5, 3, gen=gen)
    out, final = causal_conv1d_fn(x, weight, b, initial_states=initial, return_final_states=True,
                                  activation=activation)
    torch.testing.assert_close(out.double(), loop_causal_conv(x, weight, b, activation is not None, initial),
                               **close)
    torch.testing.assert_close(final, x[..., -3:])


def test_causal_conv1d_fn_rejects_bad_arguments(shim):
    from causal_conv1d import causal_conv1d_fn

    x = torch.randn(1, 3, 6)
    with pytest.raises(ValueError, match="activation='relu'"):
        causal_conv1d_fn(x, torch.randn(3, 4), activation="relu")
    with pytest.raises(ValueError, match=r"weight \(4, 4\)"):
        causal_conv1d_fn(x, torch.randn(4, 4))


def test_causal_conv1d_update_steps_like_the_whole_sequence(shim):
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update

    gen = torch.Generator().manual_seed(3)
    x, weight, bias = randn(2, 5, 7, gen=gen), randn(5, 4, gen=gen), randn(5, gen=gen)
    state = torch.zeros(2, 5, 4)
    steps = [causal_conv1d_update(x[..., t], state, weight, bias, "silu") for t in range(7)]
    torch.testing.assert_close(torch.stack(steps, -1), causal_conv1d_fn(x, weight, bias, activation="silu"))
    torch.testing.assert_close(state, x[..., -4:])


def inner_inputs(seed, d_model=5, dim=6, N=3, rank=2, width=4, batch=2, L=9):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        xz=randn(batch, 2 * dim, L, gen=gen), conv1d_weight=randn(dim, 1, width, scale=0.5, gen=gen),
        conv1d_bias=randn(dim, gen=gen), x_proj_weight=randn(rank + 2 * N, dim, scale=0.5, gen=gen),
        delta_proj_weight=randn(dim, rank, scale=0.5, gen=gen), out_proj_weight=randn(d_model, dim, gen=gen),
        out_proj_bias=randn(d_model, gen=gen), A=-torch.rand(dim, N, generator=gen) - 0.2, D=randn(dim, gen=gen),
        delta_bias=randn(dim, scale=0.5, gen=gen),
    )


def _reference_args(a):
    return (a["xz"], a["conv1d_weight"], a["conv1d_bias"], a["x_proj_weight"], a["delta_proj_weight"], a["A"],
            a["D"], a["delta_bias"])


def _out_proj(y, a):
    return torch.einsum("bdl,ed->ble", y, a["out_proj_weight"].double()) + a["out_proj_bias"].double()


def test_mamba_inner_functions_match_the_reference(shim):
    from mamba_ssm.ops.selective_scan_interface import (
        bimamba_inner_fn,
        bimamba_inner_ref,
        mamba_inner_fn,
        mamba_inner_fn_no_out_proj,
        mamba_inner_ref,
    )

    a = inner_inputs(4)
    y = reference_inner(*_reference_args(a))
    torch.testing.assert_close(mamba_inner_fn(**a).double(), _out_proj(y, a), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mamba_inner_ref(**a).double(), _out_proj(y, a), rtol=1e-5, atol=1e-5)
    no_out = {k: v for k, v in a.items() if not k.startswith("out_proj")}
    torch.testing.assert_close(mamba_inner_fn_no_out_proj(**no_out).double(), y, rtol=1e-5, atol=1e-5)

    A_b = -torch.rand(*a["A"].shape, generator=torch.Generator().manual_seed(5)) - 0.2
    y_bi = _out_proj(reference_inner(*_reference_args(a), A_b=A_b), a)
    torch.testing.assert_close(bimamba_inner_fn(**a, A_b=A_b).double(), y_bi, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bimamba_inner_ref(**a, A_b=A_b).double(), y_bi, rtol=1e-5, atol=1e-5)


def test_mamba_inner_fn_projection_biases_and_rms_weights(shim):
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn

    a = inner_inputs(6)
    gen = torch.Generator().manual_seed(7)
    extras = dict(B_proj_bias=randn(3, gen=gen), C_proj_bias=randn(3, gen=gen), b_rms_weight=randn(3, gen=gen),
                  c_rms_weight=randn(3, gen=gen), dt_rms_weight=randn(6, gen=gen))
    y = reference_inner(*_reference_args(a), B_bias=extras["B_proj_bias"], C_bias=extras["C_proj_bias"],
                        b_rms=extras["b_rms_weight"], c_rms=extras["c_rms_weight"], dt_rms=extras["dt_rms_weight"])
    torch.testing.assert_close(mamba_inner_fn(**a, **extras).double(), _out_proj(y, a), rtol=1e-5, atol=1e-5)


def test_mamba_inner_fn_gradients_match_the_reference(shim):
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn

    a = {k: v.requires_grad_() for k, v in inner_inputs(8, L=6).items()}
    grad_out = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(9))
    ours = torch.autograd.grad((mamba_inner_fn(**a) * grad_out).sum(), list(a.values()))
    expected = torch.autograd.grad((_out_proj(reference_inner(*_reference_args(a)), a) * grad_out).sum(),
                                   list(a.values()))
    for name, g, e in zip(a, ours, expected):
        torch.testing.assert_close(g.double(), e.double(), rtol=1e-4, atol=1e-4,
                                   msg=lambda m, name=name: f"d/d{name}: {m}")


def test_layer_norm_fns_match_torch(shim):
    from mamba_ssm.ops.triton.layer_norm import RMSNorm, layer_norm_fn, rms_norm_fn

    gen = torch.Generator().manual_seed(10)
    x, weight, bias = randn(3, 4, 16, gen=gen).bfloat16(), randn(16, gen=gen), randn(16, gen=gen)
    out, residual = layer_norm_fn(x, weight, bias, eps=1e-5, prenorm=True, residual_in_fp32=True)
    assert out.dtype == torch.bfloat16 and residual.dtype == torch.float32
    torch.testing.assert_close(residual, x.float())
    torch.testing.assert_close(out, F.layer_norm(x.float(), (16,), weight, bias, 1e-5).bfloat16())

    h = randn(3, 4, 16, gen=gen).bfloat16()
    out, residual = rms_norm_fn(h, weight, None, residual=residual, eps=1e-5, prenorm=True)
    torch.testing.assert_close(residual, h.float() + x.float())
    torch.testing.assert_close(out, F.rms_norm(h.float() + x.float(), (16,), weight, 1e-5).bfloat16())

    norm = RMSNorm(16, eps=1e-5)
    assert norm.bias is None and [name for name, _ in norm.named_parameters()] == ["weight"]
    torch.testing.assert_close(norm(x.float()), F.rms_norm(x.float(), (16,), norm.weight, 1e-5))


def test_hf_loaders_read_a_local_folder_and_download_nothing(shim, tmp_path):
    from mamba_ssm.utils.hf import load_config_hf, load_state_dict_hf

    (tmp_path / "config.json").write_text(json.dumps({"d_model": 8}))
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    assert load_config_hf(str(tmp_path)) == {"d_model": 8}
    state = load_state_dict_hf(str(tmp_path), dtype=torch.float16)
    assert state["w"].dtype == torch.float16 and torch.equal(state["w"].float(), torch.ones(2))
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        load_config_hf("state-spaces/mamba-130m")


# ---------------------------------------------------------------------------------------------------------------
# Mamba

D_MODEL, D_STATE, D_CONV = 8, 4, 3  # d_inner 16, dt_rank ceil(8 / 16) = 1
SHAPES = {"A_log": (16, 4), "D": (16,), "gamma": (8,), "in_proj.weight": (32, 8), "conv1d.weight": (16, 1, 3),
          "conv1d.bias": (16,), "x_proj.weight": (9, 16), "dt_proj.weight": (16, 1), "dt_proj.bias": (16,),
          "out_proj.weight": (8, 16)}
DIRECTION = ["conv1d{}.weight", "conv1d{}.bias", "x_proj{}.weight", "dt_proj{}.weight", "dt_proj{}.bias"]
# state_dict order: the module's own parameters in creation order, then its submodules'.
EXPECTED_KEYS = {
    "none": ["A_log", "D", "in_proj.weight", *[k.format("") for k in DIRECTION], "out_proj.weight"],
    "v1": ["A_log", "D", "A_b_log", "in_proj.weight", *[k.format("") for k in DIRECTION], "out_proj.weight"],
    "v2": ["A_log", "D", "A_b_log", "D_b", "in_proj.weight", *[k.format(s) for s in ("", "_b") for k in DIRECTION],
           "out_proj.weight"],
    "v3": ["A_log", "D", "A_b_log", "D_b", "A_s_log", "D_s", "in_proj.weight",
           *[k.format(s) for s in ("", "_b", "_s") for k in DIRECTION], "out_proj.weight"],
}


def make_mamba(bimamba_type, seed=0, **kwargs):
    from mamba_ssm import Mamba

    torch.manual_seed(seed)
    return Mamba(D_MODEL, d_state=D_STATE, d_conv=D_CONV, bimamba_type=bimamba_type, **kwargs)


def shape_of(key):
    return SHAPES[key.replace("_b", "").replace("_s", "")]


@pytest.mark.parametrize("bimamba_type", EXPECTED_KEYS)
def test_mamba_parameter_names_shapes_and_initialisation(shim, bimamba_type):
    state = make_mamba(bimamba_type).state_dict()
    assert list(state) == EXPECTED_KEYS[bimamba_type]
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: shape_of(k) for k in state}
    model = make_mamba(bimamba_type, init_layer_scale=0.1, nslices=2)  # Vim's gamma comes first
    assert list(model.state_dict())[0] == "gamma" and torch.equal(model.gamma, torch.full((8,), 0.1))
    assert torch.equal(model.A_log, torch.log(torch.arange(1.0, 5.0)).expand(16, 4))
    dt = F.softplus(model.dt_proj.bias)
    assert model.dt_proj.bias._no_reinit and model.A_log._no_weight_decay and model.D._no_weight_decay
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model


def reference_mamba(model, hidden):
    """The forward pass built from the parameters: in_proj, each direction's conv loop and scan loop, sum,
    out_proj, gamma."""
    p = {k: v.double() for k, v in model.state_dict().items()}
    kind, L = model.bimamba_type, hidden.shape[1]
    xz = torch.einsum("bld,ed->bel", hidden.double(), p["in_proj.weight"])

    def direction(xz, s, A_b=None):
        return reference_inner(xz, p[f"conv1d{s}.weight"], p[f"conv1d{s}.bias"], p[f"x_proj{s}.weight"],
                               p[f"dt_proj{s}.weight"], -torch.exp(p[f"A{s}_log"]), p[f"D{s}"], p[f"dt_proj{s}.bias"],
                               A_b=A_b)

    y = direction(xz, "", A_b=-torch.exp(p["A_b_log"]) if kind == "v1" else None)
    if kind in ("v2", "v3"):
        y = y + direction(xz.flip(-1), "_b").flip(-1)
    if kind == "v3":  # slice s, position i of the sequence cut in nslices is read at i * nslices + s
        n = model.nslices
        order = [s * (L // n) + i for i in range(L // n) for s in range(n)]
        y_s = torch.zeros_like(y)
        y_s[..., order] = direction(xz[..., order], "_s")
        y = y + y_s
    if kind == "v2" and model.if_divide_out:
        y = y / 2
    out = torch.einsum("bdl,ed->ble", y, p["out_proj.weight"])
    return out * p["gamma"] if "gamma" in p else out


MAMBA_CASES = {
    "none": dict(bimamba_type="none"),
    "v1": dict(bimamba_type="v1"),
    "v2": dict(bimamba_type="v2"),
    "v2_divide_out_layer_scale": dict(bimamba_type="v2", if_divide_out=True, init_layer_scale=0.5),
    "v3": dict(bimamba_type="v3", nslices=3),
}


@pytest.mark.parametrize("case", MAMBA_CASES)
def test_mamba_forward_matches_the_step_by_step_reference(shim, case):
    model = _perturbed(make_mamba(dtype=torch.float64, **MAMBA_CASES[case]))
    hidden = torch.randn(2, 12, D_MODEL, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        torch.testing.assert_close(model(hidden), reference_mamba(model, hidden), rtol=1e-6, atol=1e-6)


def test_mamba_float32_forward_and_bad_lengths(shim):
    model = _perturbed(make_mamba("v3", nslices=4))
    hidden = torch.randn(2, 12, D_MODEL, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        out = model(hidden)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), reference_mamba(model, hidden), rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="length 10 is not divisible by nslices=4"):
            model(hidden[:, :10])
        with pytest.raises(ValueError, match=r"expected \(batch, L, d_model=8\)"):
            model(hidden[..., :4])


def test_mamba_decoding_with_inference_params_matches_forward(shim):
    from mamba_ssm.utils.generation import InferenceParams

    model = _perturbed(make_mamba("none", layer_idx=0, init_layer_scale=0.5))
    hidden = torch.randn(2, 9, D_MODEL, generator=torch.Generator().manual_seed(13))
    params = InferenceParams(max_seqlen=9, max_batch_size=2)
    with torch.no_grad():
        outs = [model(hidden[:, :4], inference_params=params)]
        for t in range(4, 9):
            params.seqlen_offset = t
            outs.append(model(hidden[:, t:t + 1], inference_params=params))
        torch.testing.assert_close(torch.cat(outs, 1), model(hidden), rtol=1e-5, atol=1e-5)
        with pytest.raises(NotImplementedError, match="bimamba_type='none'"):
            make_mamba("v2", layer_idx=0)(hidden, inference_params=InferenceParams(9, 2))
        with pytest.raises(ValueError, match="layer_idx"):
            make_mamba("none")(hidden, inference_params=InferenceParams(9, 2))
