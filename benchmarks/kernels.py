"""Selective-scan (and cross-scan) kernel benchmarks; every ratio is against a baseline timed in the same run.

    python benchmarks/kernels.py [--device cpu|cuda] [--quick] [--threads 1,2] [--peak-gbps X]

writes benchmarks/results/kernels-<device>.json and kernels-<device>.png.
- CPU: the numba and torch paths against two per-step Python loops, at L in {256, 1024, 4096}, dim 192, N 16,
  batch 1, forward and forward+backward, with 1 thread and with all cores (each method alike), plus the memory
  autograd saves for backward and two ceilings on any speed-up: torch.exp's throughput alone, and the passes a
  chunked eager scan makes besides scanning (dt A, exp, dt B u, readout). "loop_naive" computes each step as the
  recurrence reads (exp(dt A), dt B u, the readout); "loop_precomputed" is mamba_ssm's `selective_scan_ref`
  style (exp(dt A) and dt B u for all steps up front, only the state update and readout in the loop). Methods
  are timed interleaved, round by round (the minimum over rounds), so a shared machine's load falls on all alike.
  Bars at L = 4096: numba forward >= 25x and forward+backward >= 20x loop_naive, and numba's forward speed-up
  within 2x of the exp-only ceiling.
- CUDA: Triton forward and forward+backward against the torch path and, when importable, mamba_ssm's
  `selective_scan_fn` (comparison only, never a dependency); achieved bandwidth (minimum bytes moved / time) against
  the GPU's peak; fp32 and bf16; L 1k..64k; dim 768 and 1536; N 16.
The cross-scan benchmark (benchmarks/cross_scan_bench.py) is merged in under "cross_scan".
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from medmamba.evaluation.efficiency import interleaved_ms, machine_description
from medmamba.io_utils import atomic_file
from medmamba.kernels import selective_scan
from medmamba.kernels.selective_scan_torch import BLOCK_ELEMENTS

HERE = Path(__file__).resolve().parent
BAR_CPU_FWD_SPEEDUP = 25.0
BAR_CPU_FWD_BWD_SPEEDUP = 20.0
BAR_CPU_EXP_CEILING_FRACTION = 0.5
BAR_CPU_L = 4096
BAR_GPU_PEAK_FRACTION = 0.70
# DRAM peak in GB/s by device-name fragment (vendor data sheets); --peak-gbps overrides
PEAK_GBPS = {"H200": 4800, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039, "A100 80GB": 1935,
             "A100": 1555, "L40S": 864, "A10": 600, "L4": 300, "RTX 4090": 1008, "RTX 3090": 936, "V100": 900}


def _time_ms(fn, device: torch.device, repeats: int) -> float:
    """Milliseconds after warm-up: triton's do_bench median on CUDA; on CPU the minimum of the repeats (the
    least disturbed run: the figures are ratios between methods timed alike on a possibly shared machine)."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=repeats, return_mode="median")
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def _saved_for_backward_mb(fn, inputs) -> float:
    """Megabytes autograd keeps between forward and backward (distinct storages seen by saved_tensors_hooks)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(**leaves)
    return sum(storages.values()) / 2 ** 20


def _inputs(batch, dim, L, N, dtype, device, requires_grad=False):
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)

    # Mamba's initialisation: A = -(1..N) per channel (S4D-real), softplus(delta_bias) log-uniform in [1e-3, 1e-1]
    A = -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1)
    dt0 = torch.exp(torch.rand(dim, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt0 + torch.log(-torch.expm1(-dt0))
    return dict(u=rnd(batch, dim, L), delta=rnd(batch, dim, L, scale=0.5), A=A.to(device).requires_grad_(requires_grad),
                B=rnd(batch, N, L), C=rnd(batch, N, L), D=rnd(dim), z=rnd(batch, dim, L),
                delta_bias=delta_bias.to(device).requires_grad_(requires_grad))


def _dt(delta, delta_bias):
    return F.softplus(delta.float() + delta_bias.float()[:, None])


def loop_naive(u, delta, A, B, C, D, z, delta_bias):
    """Per-step loop, each step computed as the recurrence reads (unbind, so backward stays linear in L)."""
    dt = _dt(delta, delta_bias)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
    ys = []
    for dt_t, u_t, B_t, C_t in zip(dt.unbind(-1), u.float().unbind(-1), B.float().unbind(-1), C.float().unbind(-1)):
        dt_t = dt_t[..., None]
        h = torch.exp(dt_t * A) * h + dt_t * B_t[:, None] * u_t[..., None]
        ys.append((h * C_t[:, None]).sum(-1))
    y = torch.stack(ys, -1) + D.float()[:, None] * u.float()
    return (y * F.silu(z.float())).to(z.dtype)


def loop_precomputed(u, delta, A, B, C, D, z, delta_bias):
    """mamba_ssm `selective_scan_ref` style: all exp(dt A) and dt B u up front, only the recurrence in the loop."""
    dt = _dt(delta, delta_bias)
    u, B, C = u.float(), B.float(), C.float()
    decay = torch.exp(torch.einsum("bdl,dn->bdln", dt, A))
    drive = torch.einsum("bdl,bnl,bdl->bdln", dt, B, u)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for decay_t, drive_t, C_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(-1)):
        h = decay_t * h + drive_t
        ys.append(torch.einsum("bdn,bn->bd", h, C_t))
    y = torch.stack(ys, -1) + D.float()[:, None] * u
    return (y * F.silu(z.float())).to(z.dtype)


def _scan(backend):
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=backend)


def _fwd_and_fwd_bwd_fns(fn, inputs) -> tuple:
    """(forward without autograd, forward+backward) as argument-less functions."""
    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    grad_out = torch.randn_like(leaves["u"])

    def fwd():
        with torch.no_grad():
            fn(**inputs)

    def fwd_bwd():
        fn(**leaves).backward(grad_out)
        for v in leaves.values():
            v.grad = None

    return fwd, fwd_bwd


def _fwd_and_fwd_bwd(fn, inputs, device, repeats):
    """(forward ms without autograd, forward+backward ms)."""
    fwd, fwd_bwd = _fwd_and_fwd_bwd_fns(fn, inputs)
    return _time_ms(fwd, device, repeats), _time_ms(fwd_bwd, device, repeats)


def _exp_fn():
    """torch.exp on a cache-sized float32 tensor, and the elements it covers."""
    x, out = -torch.rand(2 ** 18), torch.empty(2 ** 18)
    return (lambda: torch.exp(x, out=out)), x.numel()


def _eager_passes_ms(batch: int, dim: int, L: int, N: int, repeats: int) -> float:
    """The passes over the (batch, dim, N, L) state that a chunked eager scan makes besides the scan itself:
    dt A, its exp, the drive dt u B and the readout against C, on cache-sized blocks of steps as the torch path
    runs them, with no scanning at all (milliseconds)."""
    dt, x, B, C = (torch.rand(L, batch, 1, n) for n in (dim, dim, N, N))
    A = -torch.rand(N, dim)
    y = torch.empty(L, batch, 1, dim)
    steps = max(1, BLOCK_ELEMENTS // (batch * dim * N))
    decay, drive = (torch.empty(steps, batch, N, dim) for _ in range(2))

    def passes():
        for r in range(0, L, steps):
            s = min(steps, L - r)
            torch.mul(dt[r:r + s], A, out=decay[:s]).exp_()
            torch.mul(x[r:r + s], B[r:r + s].transpose(-1, -2), out=drive[:s])
            torch.matmul(C[r:r + s], drive[:s], out=y[r:r + s])

    return _time_ms(passes, torch.device("cpu"), repeats)


def run_cpu(quick: bool, thread_counts: list[int]) -> dict:
    device = torch.device("cpu")
    scans = ("numba", "torch")
    methods = {**{name: _scan(name) for name in scans}, "loop_naive": loop_naive, "loop_precomputed": loop_precomputed}
    repeats = 3 if quick else 5
    batch, dim, N = 1, 192, 16
    cases = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for L in tqdm((256, 1024, 4096), desc=f"cpu selective scan, {threads} thread(s)"):
            inputs = _inputs(batch, dim, L, N, torch.float32, device)
            case = {"threads": threads, "batch": batch, "dim": dim, "L": L, "N": N, "dtype": "float32"}
            with torch.no_grad():
                ref = loop_naive(**inputs)
                for name in scans:
                    err = (methods[name](**inputs) - ref).abs().max().item() / ref.abs().max().item()
                    case[f"{name}_vs_loop_max_rel_err"] = err
            exp_fn, exp_elements = _exp_fn()
            fns = {"exp": exp_fn}
            for name, fn in methods.items():
                fns[f"{name}_fwd"], fns[f"{name}_fwd_bwd"] = _fwd_and_fwd_bwd_fns(fn, inputs)
            times = interleaved_ms(fns, repeats)
            for name, fn in methods.items():
                for phase in ("fwd", "fwd_bwd"):
                    case[f"{name}_{phase}_ms"] = times[f"{name}_{phase}"]
                case[f"{name}_saved_for_backward_mb"] = _saved_for_backward_mb(fn, inputs)
            for name in scans:
                for base in ("loop_naive", "loop_precomputed"):
                    for phase in ("fwd", "fwd_bwd"):
                        case[f"{name}_speedup_{phase}_vs_{base}"] = (case[f"{base}_{phase}_ms"]
                                                                     / case[f"{name}_{phase}_ms"])
            # any method evaluates the batch * dim * N * L decays exp(dt A): at torch.exp's throughput alone,
            # the per-step loop can be beaten by at most this factor
            exp_ns = times["exp"] * 1e6 / exp_elements
            exp_ms = exp_ns * batch * dim * N * L / 1e6
            case["exp_ns_per_element"] = exp_ns
            case["exp_only_speedup_ceiling_vs_loop_naive"] = case["loop_naive_fwd_ms"] / exp_ms
            case["numba_fwd_fraction_of_exp_only_ceiling"] = (case["numba_speedup_fwd_vs_loop_naive"]
                                                              / case["exp_only_speedup_ceiling_vs_loop_naive"])
            # and, with the other passes every chunked eager scan makes (the scan's own passes not counted), at most
            case["eager_passes_ms"] = _eager_passes_ms(batch, dim, L, N, repeats)
            case["eager_passes_speedup_ceiling_vs_loop_naive"] = case["loop_naive_fwd_ms"] / case["eager_passes_ms"]
            cases.append(case)
    bar = {"at_L": BAR_CPU_L, "numba_fwd_speedup_vs_loop_naive_at_least": BAR_CPU_FWD_SPEEDUP,
           "numba_fwd_bwd_speedup_vs_loop_naive_at_least": BAR_CPU_FWD_BWD_SPEEDUP,
           "numba_fwd_fraction_of_exp_only_ceiling_at_least": BAR_CPU_EXP_CEILING_FRACTION}
    for case in (c for c in cases if c["L"] == BAR_CPU_L):
        threads = case["threads"]
        checks = {"fwd": (case["numba_speedup_fwd_vs_loop_naive"], BAR_CPU_FWD_SPEEDUP),
                  "fwd_bwd": (case["numba_speedup_fwd_bwd_vs_loop_naive"], BAR_CPU_FWD_BWD_SPEEDUP),
                  "exp_ceiling_fraction": (case["numba_fwd_fraction_of_exp_only_ceiling"],
                                           BAR_CPU_EXP_CEILING_FRACTION)}
        for key, (value, at_least) in checks.items():
            bar[f"numba_{key}_{threads}_threads"] = value
            bar[f"met_{key}_{threads}_threads"] = value >= at_least
    return {"cases": cases, "bar": bar}


def _min_bytes(batch, dim, L, N, element_size) -> dict:
    """Minimum DRAM traffic. fwd reads u, delta, z, B, C and writes out; bwd reads those plus dout and writes
    du, ddelta, dz, dB, dC (chunk checkpoints and per-channel vectors are negligible)."""
    seq, bc = batch * dim * L * element_size, batch * N * L * element_size
    fwd = 4 * seq + 2 * bc
    return {"fwd": fwd, "fwd_bwd": fwd + (4 * seq + 2 * bc) + (3 * seq + 2 * bc)}


def _peak_gbps(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((v for k, v in PEAK_GBPS.items() if k in name), None)


def run_cuda(quick: bool, peak_override: float | None) -> dict:
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = _peak_gbps(name, peak_override)
    methods = {"triton": _scan("triton"), "torch": _scan("torch")}
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        methods["mamba_ssm"] = lambda **kw: selective_scan_fn(**kw, delta_softplus=True)
    except ImportError:
        pass
    lengths = (1024, 4096) if quick else (1024, 4096, 16384, 65536)
    dims = (768,) if quick else (768, 1536)
    repeats = 20 if quick else 100  # do_bench: milliseconds of repetition
    torch_budget = 2 ** 27  # dim * N * L above this: the torch path's autograd would need tens of GB, skipped
    cases = []
    for dtype in tqdm((torch.float32, torch.bfloat16), desc="cuda selective scan"):
        for dim in dims:
            for L in lengths:
                inputs = _inputs(1, dim, L, 16, dtype, device)
                case = {"batch": 1, "dim": dim, "L": L, "N": 16, "dtype": str(dtype).split(".")[-1]}
                for mname, fn in methods.items():
                    if mname == "torch" and dim * 16 * L > torch_budget:
                        case["torch_skipped"] = f"dim*N*L = {dim * 16 * L} > {torch_budget} (memory)"
                        continue
                    case[f"{mname}_fwd_ms"], case[f"{mname}_fwd_bwd_ms"] = _fwd_and_fwd_bwd(fn, inputs, device,
                                                                                          repeats)
                    torch.cuda.empty_cache()
                for other in ("torch", "mamba_ssm"):
                    for phase in ("fwd", "fwd_bwd"):
                        if f"{other}_{phase}_ms" in case:
                            case[f"speedup_{phase}_vs_{other}"] = (case[f"{other}_{phase}_ms"]
                                                                   / case[f"triton_{phase}_ms"])
                for phase, nbytes in _min_bytes(1, dim, L, 16, inputs["u"].element_size()).items():
                    gbps = nbytes / case[f"triton_{phase}_ms"] / 1e6
                    case[f"triton_{phase}_gb_per_s"] = gbps
                    if peak:
                        case[f"triton_{phase}_peak_fraction"] = gbps / peak
                cases.append(case)
                del inputs
    result = {"cases": cases, "peak_gbps": peak, "mamba_ssm_compared": "mamba_ssm" in methods}
    bar = {}
    if "mamba_ssm" in methods:
        worst = min(c["speedup_fwd_bwd_vs_mamba_ssm"] for c in cases)
        bar.update(triton_fwd_bwd_vs_mamba_ssm_at_least=1.0, worst_vs_mamba_ssm=worst, met_vs_mamba_ssm=worst >= 1.0)
    if peak:
        best = max(c["triton_fwd_peak_fraction"] for c in cases)
        bar.update(peak_fraction_at_least=BAR_GPU_PEAK_FRACTION, best_fwd_peak_fraction=best,
                   met_peak_fraction=best >= BAR_GPU_PEAK_FRACTION)
    result["bar"] = bar
    return result


def _cross_scan(device: str, quick: bool) -> dict | None:
    path = HERE / "cross_scan_bench.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("cross_scan_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(device, quick)


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result["selective_scan"]["cases"]
    if result["device_type"] == "cpu":
        thread_counts = sorted({c["threads"] for c in cases})
        fig, axes = plt.subplots(1, len(thread_counts), figsize=(6 * len(thread_counts), 4), squeeze=False)
        series = [(f"{m}_speedup_{p}_vs_loop_naive", f"{m} {p.replace('_', '+')}") for m in ("numba", "torch")
                  for p in ("fwd", "fwd_bwd")]
        series += [("exp_only_speedup_ceiling_vs_loop_naive", "exp-only ceiling"),
                   ("eager_passes_speedup_ceiling_vs_loop_naive", "eager-passes ceiling")]
        width = 0.8 / len(series)
        for ax, threads in zip(axes[0], thread_counts):
            sel = [c for c in cases if c["threads"] == threads]
            for i, (key, label) in enumerate(series):
                ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(sel))], [c[key] for c in sel],
                       width, label=label)
            for value, style in ((BAR_CPU_FWD_SPEEDUP, "--"), (BAR_CPU_FWD_BWD_SPEEDUP, ":")):
                ax.axhline(value, color="k", ls=style, lw=1, label=f"bar {value:g}x")
            ax.set_xticks(range(len(sel)), [f"L={c['L']}" for c in sel])
            ax.set_yscale("log")
            ax.set_ylabel("speed-up over loop_naive (x)")
            ax.set_title(f"{threads} thread(s)", fontsize=9)
            ax.legend(fontsize=7)
        fig.suptitle(f"selective scan, dim 192, N 16, batch 1 - {result['device']}", fontsize=10)
    else:
        groups = sorted({(c["dtype"], c["dim"]) for c in cases})
        fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), squeeze=False)
        for ax, (dtype, dim) in zip(axes[0], groups):
            sel = [c for c in cases if c["dtype"] == dtype and c["dim"] == dim]
            for key in ("triton_fwd_ms", "triton_fwd_bwd_ms", "torch_fwd_ms", "torch_fwd_bwd_ms",
                        "mamba_ssm_fwd_ms", "mamba_ssm_fwd_bwd_ms"):
                pts = [(c["L"], c[key]) for c in sel if key in c]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=key.removesuffix("_ms"))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("L")
            ax.set_ylabel("ms")
            ax.set_title(f"{dtype}, dim {dim}", fontsize=9)
            ax.legend(fontsize=7)
        fig.suptitle(f"selective scan on {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (and on CUDA fewer sizes)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated CPU thread counts, each used by every method alike (default: 1 and all)")
    parser.add_argument("--peak-gbps", type=float, default=None, help="GPU DRAM peak, if not in the built-in table")
    args = parser.parse_args()
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device visible")
        scan = run_cuda(args.quick, args.peak_gbps)
    else:
        thread_counts = sorted({int(t) for t in args.threads.split(",")})
        scan = run_cpu(args.quick, thread_counts)
    result = {"benchmark": "selective scan kernels", "device": machine_description(args.device),
              "device_type": args.device, "torch": torch.__version__, "quick": args.quick,
              "timing": ("triton.testing.do_bench median" if args.device == "cuda" else
                         "minimum of repeated runs after one warm-up") + ", milliseconds",
              "inputs": ("u, delta (0.5 * randn), z, B, C (batch, N, L), D, delta_bias, delta_softplus=True; "
                         "Mamba's init: A = -(1..N), softplus(delta_bias) log-uniform in [1e-3, 1e-1]"),
              "load_average_1min": os.getloadavg()[0], "selective_scan": scan}
    cross = _cross_scan(args.device, args.quick)
    if cross is not None:
        result["cross_scan"] = cross
    stem = HERE / "results" / f"kernels-{args.device}"
    with atomic_file(f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(f"{stem}.png", suffix=".png") as tmp:
        _plot(result, str(tmp))
    print(json.dumps(result["selective_scan"].get("bar"), indent=2))


if __name__ == "__main__":
    main()
