"""Selective scan against an independent float64 sequential loop: outputs, last state and every gradient, for the
CPU backends (numba, torch) through the public function and so through the ``medmamba::selective_scan`` operator.

The Triton kernels run on CPU under TRITON_INTERPRET=1 in a subprocess (the flag must be set before triton is
imported): see tests/triton_interp_selective_scan.py, which reuses the reference and the cases defined here.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medmamba.kernels import selective_scan, selective_scan_ref
from medmamba.kernels import selective_scan_numba as numba_module
from medmamba.kernels import selective_scan_torch as selective_scan_torch_module

CPU_BACKENDS = ("numba", "torch")


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The float64 loop on float64 copies of the inputs. Returns (out, last_state) in float64."""
    args = [None if t is None else t.double() for t in (u, delta, A, B, C, D, z, delta_bias)]
    return selective_scan_ref(*args, delta_softplus=delta_softplus, return_last_state=True)


def make_inputs(batch=2, dim=6, L=20, N=4, G=1, grouped_form=True, with_D=True, with_z=True, with_bias=True,
                dtype=torch.float32, delta_scale=1.0, seed=0):
    """Random inputs; G=1 with grouped_form=False gives the (batch, N, L) form of B and C."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    bc_shape = (batch, G, N, L) if grouped_form else (batch, N, L)
    return dict(
        u=rnd(batch, dim, L),
        delta=(torch.rand(batch, dim, L, generator=gen) * delta_scale).to(dtype),
        A=-torch.rand(dim, N, generator=gen).mul(2).add(0.2).to(dtype),
        B=rnd(*bc_shape),
        C=rnd(*bc_shape),
        D=rnd(dim) if with_D else None,
        z=rnd(batch, dim, L) if with_z else None,
        delta_bias=rnd(dim, scale=0.5) if with_bias else None,
    )


# (case id, make_inputs kwargs, delta_softplus, return_last_state): L=1, L beyond one chunk and not a multiple of
# it, odd dim, grouped and (batch, N, L) forms, batch 1, every optional argument on and off.
CASES = [
    ("L1", dict(batch=1, dim=4, L=1), True, True),
    ("all_on_G2", dict(dim=6, L=37, G=2), True, True),
    ("plain_3d_BC", dict(dim=5, L=23, grouped_form=False, with_D=False, with_z=False, with_bias=False), False, True),
    ("no_z_G3", dict(batch=1, dim=9, L=19, G=3, with_z=False), True, False),
    ("no_D_no_bias", dict(dim=7, L=33, N=3, with_D=False, with_bias=False), True, True),
    ("z_only", dict(batch=1, dim=3, L=12, with_D=False, with_bias=False), False, False),
]
LONG_CASES = [  # several torch and numba chunks with a remainder; too slow for the Triton interpreter
    ("long_G2", dict(batch=1, dim=4, L=150, G=2), True, True),
]


def run_and_grads(fn, inputs, delta_softplus, return_last_state, seed=1):
    """Forward through fn, backward through a random projection of out (and of the last state)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    args = {k: leaves.get(k) for k in inputs}
    res = fn(**args, delta_softplus=delta_softplus)
    out, last = res if isinstance(res, tuple) else (res, None)
    gen = torch.Generator().manual_seed(seed)
    loss = (out.double() * torch.randn(out.shape, generator=gen, dtype=torch.float64)).sum()
    if return_last_state:
        loss = loss + (last.double() * torch.randn(last.shape, generator=gen, dtype=torch.float64)).sum()
    loss.backward()
    return out.detach(), (last.detach() if last is not None else None), {k: v.grad for k, v in leaves.items()}


def check_against_reference(fn, inputs, delta_softplus, return_last_state, atol, rtol):
    out, last, grads = run_and_grads(fn, inputs, delta_softplus, return_last_state)
    ref_fn = reference_scan if return_last_state else (lambda **kw: reference_scan(**kw)[0])
    ref_out, ref_last, ref_grads = run_and_grads(ref_fn, inputs, delta_softplus, return_last_state)
    assert out.dtype == inputs["u"].dtype and out.shape == inputs["u"].shape
    torch.testing.assert_close(out.double(), ref_out, atol=atol, rtol=rtol)
    if return_last_state:
        assert last.dtype == (torch.float64 if inputs["u"].dtype == torch.float64 else torch.float32)
        torch.testing.assert_close(last.double(), ref_last, atol=atol, rtol=rtol)
    assert set(grads) == set(ref_grads)
    for name in grads:
        ref_grad = ref_grads[name].double()
        scale = ref_grad.abs().max().item() + 1.0
        torch.testing.assert_close(grads[name].double(), ref_grad, atol=atol * scale, rtol=rtol,
                                   msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES + LONG_CASES, ids=lambda c: c[0])
def test_cpu_backends_match_reference(case, backend):
    _, kwargs, softplus, last_state = case
    fn = functools.partial(selective_scan, return_last_state=last_state, backend=backend)
    check_against_reference(fn, make_inputs(**kwargs), softplus, last_state, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk_size, block_steps", [(1, None), (4, 8), (7, 7), (3, 16)])
def test_torch_chunk_and_block_boundaries(monkeypatch, chunk_size, block_steps):
    """Small chunks and blocks: the state (and the adjoint) carried across many chunk and block boundaries,
    remainder chunk and block included."""
    inputs = make_inputs(dim=4, L=30, G=2)
    per_step = 2 * 4 * 4  # batch * dim * N
    monkeypatch.setattr(selective_scan_torch_module, "CHUNK_SIZE", chunk_size)
    monkeypatch.setattr(selective_scan_torch_module, "BLOCK_ELEMENTS", per_step * (block_steps or 30))
    fn = functools.partial(selective_scan, return_last_state=True, backend="torch")
    check_against_reference(fn, inputs, True, True, atol=2e-5, rtol=1e-4)


def test_numba_channel_blocks_and_partial_sums(monkeypatch):
    """150 channels of one group on 2 threads: blocks of 32 channels (the last one 22 wide), each block's
    checkpoints across 3 chunks with a remainder, and dB/dC summed from 2 partials."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert numba_module._lanes(1, 150, 2) == 32
    inputs = make_inputs(batch=1, dim=150, L=2 * numba_module.CHUNK + 5, N=3, G=1)
    fn = functools.partial(selective_scan, return_last_state=True, backend="numba")
    check_against_reference(fn, inputs, True, True, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_extreme_decays_stay_exact(backend):
    """dt * |A| summed over a chunk far beyond exp's range: decays floored or flushed to zero below fp32's smallest
    normals (where the recurrence has zero) change nothing measurable, and the decay gradient is formed from
    exp(dt A) h_{t-1} itself, not from h_t - dt B u (which would cancel)."""
    inputs = make_inputs(batch=1, dim=4, L=70, G=1, delta_scale=30.0, with_bias=False)
    inputs["A"] = inputs["A"] * 20
    fn = functools.partial(selective_scan, return_last_state=True, backend=backend)
    check_against_reference(fn, inputs, False, True, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_and_fp16(backend):
    """Low-precision inputs, float32 state: compared with the float64 loop run on the same rounded inputs.
    Tolerance: 2e-2 relative to the output scale (bf16 keeps 8 mantissa bits, the output is rounded to bf16)."""
    for dtype in (torch.bfloat16, torch.float16):
        inputs = make_inputs(dim=6, L=70, G=2, dtype=dtype)
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
        ref_out, ref_last = reference_scan(**inputs, delta_softplus=True)
        assert out.dtype == dtype and last.dtype == torch.float32
        scale = ref_out.abs().max().item()
        torch.testing.assert_close(out.double(), ref_out, atol=2e-2 * scale, rtol=2e-2)
        torch.testing.assert_close(last.double(), ref_last, atol=1e-4 * ref_last.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("backend, L", [("torch", 9), ("numba", 9), ("numba", 70)])
def test_gradcheck_float64(monkeypatch, backend, L):
    """Float64 gradients against finite differences; torch with chunks of 2 steps in blocks of 4, numba across a
    checkpoint (70 steps, in gradcheck's fast mode: random projections of the Jacobian, a few evaluations)."""
    monkeypatch.setattr(selective_scan_torch_module, "CHUNK_SIZE", 2)
    monkeypatch.setattr(selective_scan_torch_module, "BLOCK_ELEMENTS", 4 * 3 * 4)  # blocks of 4 steps
    inputs = make_inputs(batch=1, dim=4, L=L, N=3, G=2, dtype=torch.float64)
    names = list(inputs)
    leaves = [inputs[k].clone().requires_grad_() for k in names]

    def fn(*args):
        return selective_scan(**dict(zip(names, args)), delta_softplus=True, return_last_state=True, backend=backend)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6, fast_mode=L > 64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_monai_meta_tensors(backend):
    """MONAI pipelines hand the networks MetaTensors, whose ``new_empty`` takes other arguments: forward and
    backward must not allocate through it."""
    from monai.data import MetaTensor

    inputs = {k: None if v is None else MetaTensor(v).requires_grad_(True)
              for k, v in make_inputs(dim=4, L=12, with_z=False, with_bias=False).items()}
    out = selective_scan(**inputs, delta_softplus=True, backend=backend)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs.values() if t is not None)


def test_auto_backend_on_cpu_is_numba():
    inputs = make_inputs(dim=4, L=10)
    torch.testing.assert_close(selective_scan(**inputs), selective_scan(**inputs, backend="numba"), rtol=0, atol=0)


def test_without_numba_auto_uses_torch_and_numba_says_why(monkeypatch):
    from medmamba.kernels import backends

    monkeypatch.setattr(backends, "_numba_problem", ["ImportError: No module named 'numba'"])
    inputs = make_inputs(dim=4, L=10)
    torch.testing.assert_close(selective_scan(**inputs), selective_scan(**inputs, backend="torch"), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"backend='numba' is unavailable \(ImportError: No module named 'numba'\)"):
        selective_scan(**inputs, backend="numba")


@pytest.mark.parametrize("name, bad, expected", [
    ("u", torch.zeros(2, 6), "(batch, dim, L)"),
    ("delta", torch.zeros(2, 6, 19), "(2, 6, 20)"),
    ("A", torch.zeros(5, 4), "(6, 4)"),
    ("A", torch.zeros(6, 4, dtype=torch.complex64), "floating"),
    ("B", torch.zeros(2, 4, 20, 1), "G dividing dim=6"),
    ("B", torch.zeros(2, 3, 20), "(2, 4, 20)"),
    ("C", torch.zeros(2, 4, 4, 20), "G dividing dim=6"),
    ("D", torch.zeros(5), "(6,)"),
    ("z", torch.zeros(2, 6, 21), "(2, 6, 20)"),
    ("delta_bias", torch.zeros(6, dtype=torch.int64), "floating"),
    ("delta_bias", torch.zeros(6, device="meta"), "expected cpu"),
])
def test_bad_arguments_raise_value_error(name, bad, expected):
    inputs = make_inputs(dim=6, L=20, N=4)
    inputs[name] = bad
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        selective_scan(**inputs)
    msg = str(info.value)
    assert str(tuple(bad.shape)) in msg and expected in msg, msg


def test_auto_backends_on_cuda_without_triton(monkeypatch):
    """One decision for both ops: on a CUDA device without triton, "auto" falls back to torch for the scan and the
    cross-scan alike (no GPU needed: the decision takes the device), and an explicit "triton" says why; on the CPU
    "auto" is numba where the op's numba kernels take the input."""
    from medmamba.kernels import backends

    cuda = torch.device("cuda")
    monkeypatch.setattr(backends, "triton_available", lambda: False)
    assert backends.resolve_backend("selective_scan", "auto", cuda) == "torch"
    assert backends.resolve_backend("cross_scan", "auto", cuda) == "torch"
    with pytest.raises(ValueError, match="needs triton, which does not import"):
        backends.resolve_backend("cross_scan", "triton", cuda)
    monkeypatch.setattr(backends, "triton_available", lambda: True)
    assert backends.resolve_backend("selective_scan", "auto", cuda) == "triton"
    assert backends.resolve_backend("cross_scan", "auto", cuda) == "triton"
    assert backends.resolve_backend("cross_scan", "auto", cuda, supported_by_triton=False) == "torch"
    cpu = torch.device("cpu")
    assert backends.resolve_backend("cross_scan", "auto", cpu) == "numba"
    assert backends.resolve_backend("cross_scan", "auto", cpu, supported_by_numba=False) == "torch"
    with pytest.raises(ValueError, match="backend='numba' does not take this input"):
        backends.resolve_backend("cross_scan", "numba", cpu, supported_by_numba=False)
    with pytest.raises(ValueError, match="expected one of"):
        backends.resolve_backend("cross_scan", "cuda", cpu)


def test_bad_backend_and_triton_without_cuda(monkeypatch):
    inputs = make_inputs(dim=4, L=5)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        selective_scan(**inputs, backend="triton")


@pytest.mark.slow
def test_triton_backend_under_interpreter():
    """Runs tests/triton_interp_selective_scan.py with TRITON_INTERPRET=1 in a fresh interpreter process."""
    script = Path(__file__).with_name("triton_interp_selective_scan.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           str(script)], env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_triton_kernels_compile_for_hopper():
    """The interpreter accepts code the compiler rejects: compile both kernels for sm_90 (no GPU needed) with the
    default tiles, every option on, bf16 inputs."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from medmamba.kernels import selective_scan_triton as kernels

    fp32_buffers = {"A_ptr", "D_ptr", "bias_ptr", "last_ptr", "ckpt_ptr", "dlast_ptr", "du_ptr", "ddelta_ptr",
                    "dz_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr"}
    for kernel in (kernels._fwd_kernel, kernels._bwd_kernel):
        constants = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_DLAST=True, STORE_CKPT=True,
                         BLOCK_D=kernels.BLOCK_D, BLOCK_N=16, BLOCK_T=kernels.BLOCK_T)
        names = kernel.arg_names
        signature = {n: "constexpr" if n in constants else
                     (("*fp32" if n in fp32_buffers else "*bf16") if n.endswith("_ptr") else "i32") for n in names}
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(names.index(n),): v for n, v in constants.items() if n in names})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        assert "st.global" in compiled.asm["ptx"]


def test_torch_reused_buffers_outlive_inference_mode():
    """The inference path's reused buffers, first made under inference_mode, still serve no_grad and training."""
    selective_scan_torch_module.release_buffers()
    inputs = make_inputs(dim=4, L=20)
    with torch.inference_mode():
        expected = selective_scan(**inputs, backend="torch")
    with torch.no_grad():
        torch.testing.assert_close(selective_scan(**inputs, backend="torch"), expected)
    u = inputs.pop("u").clone().requires_grad_()
    selective_scan(u, **inputs, backend="torch").sum().backward()
    assert u.grad is not None


@pytest.mark.parametrize("cache, expected", [(None, 2 ** 20), (16 * 2 ** 20, 2 ** 20), (300 * 2 ** 20, 2 ** 22),
                                             (256 * 2 ** 10, 2 ** 18)])
def test_torch_block_size_follows_the_last_level_cache(monkeypatch, cache, expected):
    """A block's two float32 buffers fill at most half the last-level cache, within [2**18, 2**22] floats."""
    monkeypatch.setattr(selective_scan_torch_module, "_last_level_cache_bytes", lambda: cache)
    assert selective_scan_torch_module._block_elements() == expected


def test_numba_cache_folder(monkeypatch, tmp_path):
    """Kernels are cached under the user's cache folder (XDG_CACHE_HOME respected; NUMBA_CACHE_DIR wins), never
    beside the installed sources."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert numba_module._default_cache_dir() == tmp_path / "medmamba" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert numba_module._default_cache_dir() == tmp_path / "elsewhere"
    numba_module.warm_up((torch.float32,))
    cache_path = Path(numba_module._forward_kernel.stats.cache_path)
    assert numba_module.cache_dir() in cache_path.parents and any(cache_path.glob("*._forward_kernel-*.nbi"))
    assert Path(numba_module.__file__).parent not in cache_path.parents


def test_numba_compile_notice_and_record(monkeypatch, tmp_path, caplog):
    """A compile of a scan kernel is announced in one log line and its duration recorded for `medmamba doctor`
    (driven here by numba's compile events for the forward kernel)."""
    from numba.core import event, types

    monkeypatch.setattr(numba_module.numba.config, "CACHE_DIR", str(tmp_path))
    assert numba_module.compile_record() is None
    notice = numba_module._CompileNotice()
    data = {"dispatcher": numba_module._forward_kernel, "args": (types.Array(types.float32, 3, "C"),),
            "return_type": None}
    with caplog.at_level("WARNING", logger=numba_module.__name__):
        notice.on_start(event.Event("numba:compile", event.EventStatus.START, data))
        notice.on_end(event.Event("numba:compile", event.EventStatus.END, data))
    assert [r.getMessage() for r in caplog.records] == [
        f"medmamba: compiling the numba selective-scan forward kernel for float32 (first use; takes a while, then "
        f"cached in {tmp_path})"]
    record = numba_module.compile_record()
    assert list(record["seconds"]) == ["forward-float32"] and record["seconds"]["forward-float32"] >= 0
    notice.on_start(event.Event("numba:compile", event.EventStatus.START, {**data, "dispatcher": numba_module._copy}))
    assert len(caplog.records) == 1  # helpers compiled along the way are not announced


def test_doctor_warm_reports_the_numba_kernels():
    from medmamba.cli.doctor import _numba_kernels

    line = _numba_kernels(warm=True)
    assert line.startswith("numba kernels: ") and " in " in line and str(numba_module.cache_dir()) in line


def test_numba_keeps_torchs_thread_count():
    """In a fresh process: torch.set_num_threads(1) holds across the first numba launch (which sizes the OpenMP
    pool numba shares with torch) and numba runs on that many threads."""
    code = ("import numba, torch; torch.set_num_threads(1); from medmamba.kernels import selective_scan; "
            "x = torch.randn(1, 4, 8); selective_scan(x, x, -torch.ones(4, 2), x[:, :2], x[:, :2], backend='numba'); "
            "print(torch.get_num_threads(), numba.get_num_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "1"], proc.stdout
