"""One GPU check: the Triton kernels correct and fast on the GPU, every network finite under AMP, trainers and models
measured, and the issue's bars evaluated, all in one run (``make gpu-check``).

    python benchmarks/gpu_check.py [--quick] [--sections a,b,...] [--budget-scale X] [--out-dir DIR]

Sections, each in its own try block (an error is recorded with its message and the rest still runs) and each
time-boxed (work starts only while its box has time left; together about 7.5 minutes on an H100/H200):

- correctness: the Triton selective scan against the float64 reference and the torch path (outputs, last state,
  every gradient; fp32, bf16, fp16; the CPU tests' shapes plus L 65536, dim 1536 and groups), and the Triton
  cross-scan / merge / unscan against the torch path (axis routes, and MHS-VM's permutation routes where
  ``medmamba.kernels`` exports ``mhs_routes``).
- networks_amp: every catalog network forward+backward under autocast bf16 and fp16 at its reference input; a
  non-finite output or gradient fails.
- kernel_speed: selective scan fwd and fwd+bwd (L 4k..64k, dim 768 and 1536, N 16, bf16 and fp32): time, achieved
  bandwidth against a device copy measured in the same run, ratio to mamba_ssm's ``selective_scan_fn`` where it
  imports; fused cross-scan/merge against the unfused torch path (``benchmarks/cross_scan_bench.py``).
- first_call: the first scan call (Triton compilation) in a fresh process, with an empty and with a warm cache.
- trainers: seconds per iteration and peak memory of every trainer against nnUNetTrainer on the CUDA 3d_fullres
  (128^3) and 2d (512^2) plans of ``benchmarks/trainers.py``, batch 2, the trainers' own mixed precision.
- models: inference latency and peak memory of vm_unet, mhs_vm_unet and segmamba against SwinUNETR at 1248^2 and
  256^3 (``benchmarks/models.py``'s goal).

Writes ``benchmarks/results/gpu-check-<gpu>.json`` after every section (``-quick`` added for --quick; a run of some
``--sections`` replaces those sections in the existing file and keeps the others) and ``gpu-check-<gpu>.png``;
prints one line per section and the bars. --quick: correctness, networks_amp (first spatial dims only) and
kernel_speed at two sizes, 2-3 minutes. Exit status: 0 no bar failed and no section errored, 1 otherwise, 2 no GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from medmamba.io_utils import atomic_file
from medmamba.kernels import selective_scan, selective_scan_ref

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NO_GPU_EXIT = 2
NO_GPU_LINE = "gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured"

SECTIONS = ("correctness", "networks_amp", "kernel_speed", "first_call", "trainers", "models")
QUICK_SECTIONS = ("correctness", "networks_amp", "kernel_speed")
BUDGETS_S = {"correctness": 70, "networks_amp": 70, "kernel_speed": 60, "first_call": 50, "trainers": 140,
             "models": 60}
QUICK_BUDGETS_S = {"correctness": 60, "networks_amp": 50, "kernel_speed": 40}

# Correctness: max |x - reference| / max |reference| per tensor (outputs, last state, each gradient).
TOLERANCE = {"float32": 2e-4, "bfloat16": 5e-2, "float16": 1e-2}
SCAN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Beyond the CPU tests' shapes (tests/test_selective_scan.py): wide channels with groups, long sequences.
GPU_SCAN_CASES = [  # (case id, make_inputs kwargs, delta_softplus, return_last_state)
    ("dim1536_G4", dict(batch=1, dim=1536, L=2048, N=16, G=4), True, True),
    ("L65536_G2", dict(batch=1, dim=64, L=65536, N=16, G=2), True, True),
    ("dim768_L16384", dict(batch=1, dim=768, L=16384, N=16), True, True),
]
QUICK_GPU_SCAN_CASES = GPU_SCAN_CASES[:2]
STEP_LOOP_MAX_L = 4096  # longer sequences: the float64 torch path is the reference (the step loop takes minutes)
CROSS_SCAN_SHAPES = {2: (2, 16, 33, 47), 3: (2, 8, 9, 17, 23)}  # odd edges: partial tiles along every axis
COPY_OPS = ("scan", "unscan", "grad_merge", "grad_unscan")  # pure permutations: Triton must equal torch exactly

AMP_DTYPES = (torch.bfloat16, torch.float16)
LOSS_SCALES = (2.0 ** 16, 2.0 ** 8, 1.0)  # GradScaler's initial scale, then lower ones as it backs off an overflow

SPEED_LENGTHS, QUICK_SPEED_LENGTHS = (4096, 16384, 65536), (4096, 16384)
SPEED_DIMS, QUICK_SPEED_DIMS = (768, 1536), (768,)
SPEED_DTYPES = (torch.bfloat16, torch.float32)
SPEED_N = 16
COPY_BYTES = 2 ** 30  # per buffer of the device copy (far beyond any cache)

FIRST_CALL_SHAPE = dict(dim=768, L=4096, channels=96, edge=64)
TRAINER_ITERS = 5
TRAINER_MIN_S = 20  # a trainer is started only with this much of the section's box left
GOAL_MODELS = ("vm_unet", "mhs_vm_unet", "segmamba")

BARS = {
    "correctness": "every correctness and networks_amp check passes",
    "scan_vs_mamba_ssm": "Triton scan fwd+bwd >= 1.0x mamba_ssm's selective_scan_fn (worst case)",
    "scan_fwd_bandwidth": "Triton scan forward >= 70% of the device copy's bandwidth, every case with L >= 16384",
    "cross_scan_fused": "fused cross-scan/merge >= 1.5x the unfused torch path (worst case and op)",
    "cross_scan_permutation": "Triton permutation-route cross-scan/merge >= 1.5x the torch path (worst case and op)",
    "mhsvm_trainer_3d": "MHSVMTrainer 3d_fullres time per iteration <= 1.2x nnUNetTrainer's",
    "models_memory": "vm_unet, mhs_vm_unet, segmamba inference peak memory <= 20% of SwinUNETR's where both fit",
    "models_latency": "vm_unet, mhs_vm_unet, segmamba inference latency <= 0.5x SwinUNETR's where both fit",
}
BANDWIDTH_FRACTION_MIN, BANDWIDTH_MIN_L = 0.70, 16384
MAMBA_SSM_RATIO_MIN = 1.0
CROSS_SCAN_SPEEDUP_MIN = 1.5
MHSVM_TIME_RATIO_MAX = 1.2


@functools.cache
def bench(name: str):
    """A sibling benchmark script (``benchmarks/<name>.py``) as a module (benchmarks/ is no package)."""
    return _load(HERE / f"{name}.py", f"_benchmark_{name}")


@functools.cache
def cpu_scan_tests():
    """tests/test_selective_scan.py: its cases (CASES, LONG_CASES) and input maker are the CPU tests' shapes."""
    return _load(HERE.parent / "tests" / "test_selective_scan.py", "_cpu_selective_scan_tests")


def _load(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_memory() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class Deadline:
    """A section's time box: new work starts only while time is left."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self, need: float = 0.0) -> bool:
        return self.remaining() <= need


# ---------------------------------------------------------------------------------------------------------------
# Correctness: selective scan and cross-scan

def rel_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|, in float64 (NaN or inf when ``value`` has a NaN or inf).

    Args:
        value: the tensor checked.
        reference: the tensor it should equal, same shape.

    Returns:
        The relative error (the absolute one when ``reference`` is all zeros).
    """
    diff = (value.double() - reference.double()).abs().max().item()
    scale = reference.double().abs().max().item()
    return diff / scale if scale > 0 else diff


def _scan_run(fn, inputs: dict, softplus: bool, last_state: bool, seed: int = 1) -> dict[str, torch.Tensor]:
    """Forward through ``fn`` and backward through a fixed random projection of out (and of the last state):
    ``out``, ``last_state`` and ``grad_<input>`` for every input given."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items() if v is not None}
    result = fn(**{k: leaves.get(k) for k in inputs}, delta_softplus=softplus, return_last_state=last_state)
    out, last = result if last_state else (result, None)
    gen = torch.Generator(device=out.device).manual_seed(seed)

    def projection(t):
        return torch.randn(t.shape, generator=gen, device=t.device, dtype=torch.float64)

    loss = (out.double() * projection(out)).sum()
    tensors = {"out": out.detach()}
    if last is not None:
        loss = loss + (last.double() * projection(last)).sum()
        tensors["last_state"] = last.detach()
    loss.backward()
    tensors.update({f"grad_{k}": v.grad for k, v in leaves.items()})
    return tensors


def _worst(errors: dict[str, dict[str, float]]) -> float:
    values = [e for per_pair in errors.values() for e in per_pair.values()]
    return math.nan if any(math.isnan(e) for e in values) else max(values)


def check_scan_case(case: tuple, dtype: torch.dtype, device: str | torch.device) -> dict:
    """The Triton scan and the torch path, both in ``dtype``, against the float64 reference and each other.

    Args:
        case: (case id, ``make_inputs`` kwargs of tests/test_selective_scan.py, delta_softplus, return_last_state).
        dtype: the inputs' dtype.
        device: where to run ("cuda"; "cpu" under TRITON_INTERPRET=1).

    Returns:
        A record: ``rel_errors`` per pair (triton / torch vs reference, triton vs torch) and tensor, the
        ``tolerance``, ``worst_rel_error``, whether the Triton tensors are all finite, and ``passed``.
    """
    case_id, kwargs, softplus, last_state = case
    dtype_name = str(dtype).removeprefix("torch.")
    inputs = {k: None if v is None else v.to(device)
              for k, v in cpu_scan_tests().make_inputs(**kwargs, dtype=dtype).items()}
    step_loop = kwargs["L"] <= STEP_LOOP_MAX_L
    reference_fn = selective_scan_ref if step_loop else functools.partial(selective_scan, backend="torch")
    reference = _scan_run(reference_fn, {k: None if v is None else v.double() for k, v in inputs.items()},
                          softplus, last_state)
    runs = {backend: _scan_run(functools.partial(selective_scan, backend=backend), inputs, softplus, last_state)
            for backend in ("triton", "torch")}
    errors = {f"{name}_vs_reference": {k: rel_error(v, reference[k]) for k, v in run.items()}
              for name, run in runs.items()}
    errors["triton_vs_torch"] = {k: rel_error(v, runs["torch"][k]) for k, v in runs["triton"].items()}
    tolerance = TOLERANCE[dtype_name]
    finite = all(bool(torch.isfinite(t).all()) for t in runs["triton"].values())
    worst = _worst(errors)
    return {"check": f"scan {case_id} {dtype_name}", "case": case_id, "dtype": dtype_name,
            "shape": {k: kwargs.get(k) for k in ("batch", "dim", "L", "N", "G")},
            "reference": "float64 step loop (selective_scan_ref)" if step_loop else "float64 torch path",
            "tolerance": tolerance, "worst_rel_error": worst, "triton_finite": finite,
            "passed": finite and worst <= tolerance, "rel_errors": errors}


def route_sets() -> tuple[dict[str, tuple[int, list]], str | None]:
    """The route sets the cross-scan is checked on: ``{name: (spatial dims, routes)}``.

    Returns:
        VMamba's axis routes (2D, 3D) and, where ``medmamba.kernels`` exports ``mhs_routes`` and ``MHS_PATTERNS``,
        MHS-VM's four patterns in 2D and 3D; and why the permutation routes are missing (None when present).
    """
    import medmamba.kernels as kernels

    sets = {"axis_2d": (2, list(kernels.ROUTES_2D)), "axis_3d": (3, list(kernels.ROUTES_3D))}
    mhs_routes, patterns = getattr(kernels, "mhs_routes", None), getattr(kernels, "MHS_PATTERNS", None)
    if mhs_routes is None or patterns is None:
        return sets, "not available: medmamba.kernels exports no mhs_routes / MHS_PATTERNS"
    for pattern in patterns:
        for dims in (2, 3):
            sets[f"mhs_{pattern}_{dims}d"] = (dims, list(mhs_routes(pattern, dims)))
    return sets, None


def _cross_scan_run(backend: str, full: torch.Tensor, channels: int, y: torch.Tensor, grads: dict, routes,
                    spatial: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Scan of a channel slice of ``full`` (as MHS-VM's heads read it), merge and unscan of ``y``, each with
    its gradient against the fixed output gradients ``grads``."""
    import medmamba.kernels as kernels

    leaf = full.detach().clone().requires_grad_()
    seqs = kernels.cross_scan(leaf[:, channels:], routes, backend=backend)
    seqs.backward(grads["scan"])
    results = {"scan": seqs.detach(), "grad_scan": leaf.grad}
    ops = {"merge": kernels.cross_merge}
    if hasattr(kernels, "cross_unscan"):
        ops["unscan"] = kernels.cross_unscan
    for name, op in ops.items():
        leaf = y.detach().clone().requires_grad_()
        out = op(leaf, routes, spatial_shape=spatial, backend=backend)
        out.backward(grads[name])
        results[name], results[f"grad_{name}"] = out.detach(), leaf.grad
    return results


def check_cross_scan(name: str, routes: list, shape: tuple[int, ...], dtype: torch.dtype,
                     device: str | torch.device) -> dict:
    """Triton cross-scan, merge and unscan (forward and gradient) against the torch path.

    Args:
        name: the route set's name (for the record).
        routes: its routes.
        shape: (B, C, *spatial) of the map scanned.
        dtype: the map's dtype.
        device: where to run ("cuda"; "cpu" under TRITON_INTERPRET=1).

    Returns:
        A record: ``rel_errors`` per op, their tolerances (0 for pure permutations, ``TOLERANCE`` for sums) and
        ``passed``.
    """
    dtype_name = str(dtype).removeprefix("torch.")
    b, c, *spatial = shape
    length, k = math.prod(spatial), len(routes)
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=gen, device=device).to(dtype)

    full = randn(b, 2 * c, *spatial)  # the second half of the channels is scanned: a strided slice
    y = randn(b, k, c, length)
    grads = {"scan": randn(b, k, c, length), "merge": randn(b, c, length), "unscan": randn(b, k, c, length)}
    runs = {backend: _cross_scan_run(backend, full, c, y, grads, routes, tuple(spatial))
            for backend in ("triton", "torch")}
    errors = {op: rel_error(runs["triton"][op], ref) for op, ref in runs["torch"].items()}
    tolerances = {op: 0.0 if op in COPY_OPS else TOLERANCE[dtype_name] for op in errors}
    passed = all(errors[op] <= tolerances[op] for op in errors)
    return {"check": f"cross-scan {name} {dtype_name}", "routes": name, "dtype": dtype_name, "shape": list(shape),
            "rel_errors": errors, "tolerances": tolerances, "passed": passed}


def _guarded(check: str, fn) -> dict:
    """``fn()``'s record, or a failed one carrying the error (a check that raises fails, the others still run)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - recorded in the JSON
        return {"check": check, "passed": False, "error": _one_line(err)}
    finally:
        _free_memory()


def correctness(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 1: selective scan and cross-scan checks (see the module docstring)."""
    tests = cpu_scan_tests()
    cases = (QUICK_GPU_SCAN_CASES if quick else GPU_SCAN_CASES) + list(tests.CASES) + list(tests.LONG_CASES)
    scan, cross, not_checked = [], [], []
    for case in cases:
        for dtype in SCAN_DTYPES:
            label = f"scan {case[0]} {str(dtype).removeprefix('torch.')}"
            if deadline.expired():
                not_checked.append(label)
                continue
            scan.append(_guarded(label, lambda case=case, dtype=dtype: check_scan_case(case, dtype, device)))
    sets, permutation_note = route_sets()
    for name, (dims, routes) in sets.items():
        for dtype in SCAN_DTYPES:
            label = f"cross-scan {name} {str(dtype).removeprefix('torch.')}"
            if deadline.expired():
                not_checked.append(label)
                continue
            cross.append(_guarded(label, lambda name=name, routes=routes, dims=dims, dtype=dtype: check_cross_scan(
                name, routes, CROSS_SCAN_SHAPES[dims], dtype, device)))
    checks = scan + cross
    failed = [c["check"] for c in checks if not c["passed"]]
    summary = (f"{len(checks) - len(failed)}/{len(checks)} checks passed (scan {len(scan)}, cross-scan {len(cross)})"
               + (f", {len(not_checked)} not run (time box)" if not_checked else "")
               + (f"; failed: {', '.join(failed[:4])}" if failed else "")
               + ("; permutation routes " + permutation_note if permutation_note else ""))
    return {"passed": not failed and not not_checked, "summary": summary, "failed": failed,
            "not_checked": not_checked, "permutation_routes": permutation_note or "checked", "scan": scan,
            "cross_scan": cross}


# ---------------------------------------------------------------------------------------------------------------
# Networks under autocast

def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def amp_check(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> dict:
    """Forward and backward of ``model`` on ``x`` under ``torch.autocast(dtype)``; outputs and gradients finite?

    The loss is the sum of the outputs' means (every deep-supervision output) times a loss scale: GradScaler's
    initial 2**16 as nnU-Net starts, then 2**8 and 1 if the gradients overflow, as GradScaler backs off (an overflow
    it absorbs is no failure; a NaN or inf at every scale is).

    Args:
        model: the network (its parameters' gradients are overwritten).
        x: the input.
        dtype: torch.bfloat16 or torch.float16.

    Returns:
        A record: ``outputs_finite``, ``grads_finite``, ``loss_scale`` used, up to 5 ``nonfinite_grads`` names,
        ``max_abs_output``, ``params_without_grad`` and ``passed``.
    """
    for scale in LOSS_SCALES:
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype):
            outputs = list(_tensors(model(x)))
        outputs_finite = all(bool(torch.isfinite(o).all()) for o in outputs)
        (sum(o.float().mean() for o in outputs) * scale).backward()
        params = list(model.named_parameters())
        nonfinite = [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if not outputs_finite or not nonfinite:
            break
    return {"dtype": str(dtype).removeprefix("torch."), "outputs_finite": outputs_finite,
            "grads_finite": not nonfinite, "loss_scale": scale, "nonfinite_grads": nonfinite[:5],
            "max_abs_output": max(o.detach().float().abs().max().item() for o in outputs),
            "params_without_grad": sum(p.requires_grad and p.grad is None for _, p in params),
            "passed": outputs_finite and not nonfinite}


def networks_amp(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 2: every catalog network at its reference configuration (``medmamba.catalog.reference_config``),
    forward+backward under autocast bf16 and fp16; trainer-backed networks first."""
    import medmamba
    from medmamba.catalog import build_reference_model, reference_config
    from medmamba.registry import model_entry

    names = sorted(medmamba.list_models(), key=lambda n: (model_entry(n).trainer is None, n))
    checks, not_checked = [], []
    for name in names:
        all_dims = model_entry(name).spatial_dims
        for dims in all_dims[:1] if quick else all_dims:
            label = f"{name} {dims}d"
            if deadline.expired():
                not_checked.append(label)
                continue
            try:
                config = reference_config(name, dims)
                model = build_reference_model(name, dims, device)
                x = torch.randn(config["input_shape"], device=device)
                for dtype in AMP_DTYPES:
                    checks.append({"check": f"{label} {str(dtype).removeprefix('torch.')}", "network": name,
                                   "dims": dims, "preset": config["preset"], "input_shape": list(x.shape),
                                   **amp_check(model, x, dtype)})
            except Exception as err:  # noqa: BLE001 - recorded in the JSON
                checks.append({"check": label, "network": name, "dims": dims, "passed": False,
                               "error": _one_line(err)})
            finally:
                model = x = None
                _free_memory()
    failed = [c["check"] for c in checks if not c["passed"]]
    summary = (f"{len(checks) - len(failed)}/{len(checks)} forward+backward passes finite"
               + (f", {len(not_checked)} networks not run (time box)" if not_checked else "")
               + (f"; failed: {', '.join(failed[:4])}" if failed else ""))
    return {"passed": not failed and not not_checked, "summary": summary, "failed": failed,
            "not_checked": not_checked, "checks": checks}


# ---------------------------------------------------------------------------------------------------------------
# Kernel speed

def gb_per_s(nbytes: float, ms: float) -> float:
    """Bandwidth in GB/s (10**9 bytes) of moving ``nbytes`` in ``ms`` milliseconds."""
    return nbytes / ms / 1e6


def add_bandwidth(case: dict, min_bytes: dict[str, int], copy_gbps: float) -> dict:
    """``case`` with ``triton_<phase>_gb_per_s`` (minimum bytes moved / time) and ``triton_<phase>_copy_fraction``
    (that over the device copy's bandwidth) for each phase timed in ``triton_<phase>_ms``.

    Args:
        case: a scan speed case.
        min_bytes: minimum DRAM bytes per phase ("fwd", "fwd_bwd"), as ``benchmarks/kernels.py`` counts them.
        copy_gbps: the device copy's bandwidth measured in the same run.

    Returns:
        The updated case.
    """
    for phase, nbytes in min_bytes.items():
        if f"triton_{phase}_ms" in case:
            case[f"triton_{phase}_gb_per_s"] = gb_per_s(nbytes, case[f"triton_{phase}_ms"])
            case[f"triton_{phase}_copy_fraction"] = case[f"triton_{phase}_gb_per_s"] / copy_gbps
    return case


def copy_bandwidth(device: torch.device, repeats: int) -> dict:
    """A device-to-device copy of ``COPY_BYTES`` (read once, written once): the memory-bound ceiling."""
    src = torch.rand(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    ms = bench("kernels")._time_ms(lambda: dst.copy_(src), device, repeats)
    return {"bytes_moved": 2 * COPY_BYTES, "ms": ms, "gb_per_s": gb_per_s(2 * COPY_BYTES, ms)}


def mamba_ssm_scan():
    """mamba_ssm's ``selective_scan_fn`` and None, or None and why it does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # noqa: BLE001 - any failure to import means "not measured"
        return None, f"mamba_ssm not importable ({_one_line(err)})"
    return selective_scan_fn, None


def scan_speed(device: torch.device, deadline: Deadline, lengths, dims, copy_gbps: float, repeats: int) -> dict:
    """Triton (and mamba_ssm's) scan fwd and fwd+bwd at batch 1, N 16, timed by ``benchmarks/kernels.py``."""
    kernels_bench = bench("kernels")
    mamba_fn, mamba_note = mamba_ssm_scan()
    cases, not_measured = [], []
    for dtype in SPEED_DTYPES:
        for dim in dims:
            for length in lengths:
                case = {"batch": 1, "dim": dim, "L": length, "N": SPEED_N, "dtype": str(dtype).removeprefix("torch.")}
                if deadline.expired():
                    not_measured.append(case)
                    continue
                inputs = kernels_bench._inputs(1, dim, length, SPEED_N, dtype, device)
                case["triton_fwd_ms"], case["triton_fwd_bwd_ms"] = kernels_bench._fwd_and_fwd_bwd(
                    kernels_bench._scan("triton"), inputs, device, repeats)
                if mamba_fn is not None:  # its CUDA kernel takes D and delta_bias in float32 only
                    fp32 = {**inputs, "D": inputs["D"].float(), "delta_bias": inputs["delta_bias"].float()}
                    case["mamba_ssm_fwd_ms"], case["mamba_ssm_fwd_bwd_ms"] = kernels_bench._fwd_and_fwd_bwd(
                        lambda **kw: mamba_fn(**kw, delta_softplus=True), fp32, device, repeats)
                    for phase in ("fwd", "fwd_bwd"):
                        case[f"speedup_{phase}_vs_mamba_ssm"] = (case[f"mamba_ssm_{phase}_ms"]
                                                                 / case[f"triton_{phase}_ms"])
                min_bytes = kernels_bench._min_bytes(1, dim, length, SPEED_N, inputs["u"].element_size())
                cases.append(add_bandwidth(case, min_bytes, copy_gbps))
                inputs = None
                _free_memory()
    return {"cases": cases, "not_measured": not_measured, "mamba_ssm": mamba_note or "measured",
            "timing": "triton.testing.do_bench median, milliseconds; inputs as benchmarks/kernels.py (Mamba's init)"}


def permutation_cross_scan_speed(device: torch.device, quick: bool, repeats: int) -> dict:
    """MHS-VM's permutation route sets: Triton against the torch path (gather), as cross_scan_bench times them."""
    sets, note = route_sets()
    if note:
        return {"note": note, "cases": []}
    cross_bench = bench("cross_scan_bench")
    shape = (1, 32, 64, 64) if quick else (2, 96, 128, 128)
    cases = []
    for name, (dims, routes) in sets.items():
        if dims != 2 or name.startswith("axis"):
            continue
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(shape, device=device, dtype=dtype)
            case = {"name": name, "shape": list(shape), "routes": len(routes), "dtype": str(dtype).split(".")[-1],
                    "torch_ms": cross_bench._measure(x, routes, "torch", repeats),
                    "triton_ms": cross_bench._measure(x, routes, "triton", repeats)}
            case["speedup_triton_vs_torch"] = {k: case["torch_ms"][k] / v for k, v in case["triton_ms"].items()}
            cases.append(case)
    return {"cases": cases}


def kernel_speed(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 3: device copy, selective scan speed, fused and permutation cross-scan against the torch path."""
    dev = torch.device(device)
    repeats = 30 if quick else 100  # do_bench: milliseconds of repetition per measurement
    copy = copy_bandwidth(dev, repeats)
    _free_memory()
    scan = scan_speed(dev, deadline, QUICK_SPEED_LENGTHS if quick else SPEED_LENGTHS,
                      QUICK_SPEED_DIMS if quick else SPEED_DIMS, copy["gb_per_s"], repeats)
    result = {"copy": copy, "scan": scan}
    result["cross_scan"] = bench("cross_scan_bench").run(device, quick) if not deadline.expired() else \
        {"note": "not measured (time box)", "cases": []}
    result["cross_scan_permutation"] = permutation_cross_scan_speed(dev, quick, repeats) \
        if not deadline.expired() else {"note": "not measured (time box)", "cases": []}
    fwd = [c["triton_fwd_copy_fraction"] for c in scan["cases"] if c["L"] >= BANDWIDTH_MIN_L]
    result["summary"] = (f"copy {copy['gb_per_s']:.0f} GB/s; {len(scan['cases'])} scan cases"
                         + (f", forward at L >= {BANDWIDTH_MIN_L} {min(fwd):.0%}-{max(fwd):.0%} of the copy"
                            if fwd else "")
                         + f"; {scan['mamba_ssm']}")
    return result


# ---------------------------------------------------------------------------------------------------------------
# First-call latency

def first_call_child(device: str = "cuda", dim: int = FIRST_CALL_SHAPE["dim"], length: int = FIRST_CALL_SHAPE["L"],
                     channels: int = FIRST_CALL_SHAPE["channels"], edge: int = FIRST_CALL_SHAPE["edge"]) -> dict:
    """In a fresh process: seconds of the first Triton scan call (forward, then backward) and of the next one, and
    of the first and next cross-scan + merge with gradient (bf16).

    Args:
        device: "cuda" ("cpu" under TRITON_INTERPRET=1, for tests).
        dim, length: the scan's channels and sequence length (batch 1, N 16).
        channels, edge: the cross-scan map's channels and edge (1 x channels x edge x edge).

    Returns:
        ``cuda_context_s``, ``scan_first_fwd_s``, ``scan_first_bwd_s``, ``scan_next_fwd_s``, ``scan_next_bwd_s``,
        ``cross_first_s``, ``cross_next_s``.
    """
    import medmamba.kernels as kernels

    dev = torch.device(device)
    started = time.perf_counter()
    torch.zeros(1, device=dev).add_(1)
    _sync(dev)
    times = {"cuda_context_s": time.perf_counter() - started}
    inputs = bench("kernels")._inputs(1, dim, length, SPEED_N, torch.bfloat16, dev, requires_grad=True)
    x = torch.randn(1, channels, edge, edge, device=dev, dtype=torch.bfloat16, requires_grad=True)
    for call in ("first", "next"):
        started = time.perf_counter()
        out = selective_scan(**inputs, delta_softplus=True, backend="triton")
        _sync(dev)
        times[f"scan_{call}_fwd_s"] = time.perf_counter() - started
        started = time.perf_counter()
        out.backward(torch.ones_like(out))
        _sync(dev)
        times[f"scan_{call}_bwd_s"] = time.perf_counter() - started
        started = time.perf_counter()
        seqs = kernels.cross_scan(x, kernels.ROUTES_2D, backend="triton")
        kernels.cross_merge(seqs, kernels.ROUTES_2D, spatial_shape=(edge, edge), backend="triton").float().sum() \
            .backward()
        _sync(dev)
        times[f"cross_{call}_s"] = time.perf_counter() - started
    return times


def first_call(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 4: ``first_call_child`` in two fresh processes sharing a new Triton cache: empty, then warm."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-triton-cache-") as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": cache, "PYTHONWARNINGS": "ignore"}
        for label in ("empty_cache", "warm_cache"):
            if deadline.expired():
                runs[label] = {"error": "not measured (time box)"}
                continue
            command = [sys.executable, __file__, "--first-call-child", "--device", device]
            try:
                proc = subprocess.run(command, env=env, capture_output=True,
                                      encoding="utf-8", errors="replace", timeout=deadline.remaining())
            except subprocess.TimeoutExpired:
                runs[label] = {"error": f"not finished within {deadline.seconds:.0f} s"}
                continue
            if proc.returncode != 0:
                runs[label] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
                continue
            runs[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in runs.values():
        if "error" not in run:
            run["scan_first_call_s"] = run["scan_first_fwd_s"] + run["scan_first_bwd_s"]
            run["scan_compile_s"] = run["scan_first_call_s"] - run["scan_next_fwd_s"] - run["scan_next_bwd_s"]
    parts = [f"{label.replace('_', ' ')}: first scan call {run['scan_first_call_s']:.2f} s"
             if "error" not in run else f"{label.replace('_', ' ')}: {run['error']}" for label, run in runs.items()]
    return {"shape": {**FIRST_CALL_SHAPE, "dtype": "bfloat16", "N": SPEED_N}, "runs": runs,
            "summary": "; ".join(parts)}


# ---------------------------------------------------------------------------------------------------------------
# Trainers and models

def trainers(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 5: ``benchmarks/trainers.py``'s measurement of every trainer against nnUNetTrainer, 3d_fullres and
    2d, each in its own process; nnUNetTrainer and MHSVMTrainer of both configurations first."""
    trainers_bench = bench("trainers")
    configurations = trainers_bench.CONFIGURATIONS
    first = (trainers_bench.BASELINE, "MHSVMTrainer")
    order = [(c, n) for c in configurations for n in first] + \
        [(c, n) for c in configurations for n in trainers_bench.TRAINERS if n not in first]
    measured = {c: {} for c in configurations}
    for configuration, name in order:
        if deadline.expired(TRAINER_MIN_S):
            measured[configuration][name] = {"error": "not measured (time box)"}
            continue
        measured[configuration][name] = trainers_bench.measure_in_subprocess(
            name, device, TRAINER_ITERS, configuration, timeout=deadline.remaining())
    result = {}
    for configuration, rows in measured.items():
        base = rows[trainers_bench.BASELINE]
        result[configuration] = {"plan": trainers_bench.plan_description(device, configuration), "baseline": base,
                                 "trainers": {n: trainers_bench.with_ratios(m, base) for n, m in rows.items()
                                              if n != trainers_bench.BASELINE}}
    mhsvm = result["3d_fullres"]["trainers"]["MHSVMTrainer"]
    nonfinite = [f"{c} {n}" for c, r in result.items() for n, m in r["trainers"].items()
                 if m.get("skipped_nonfinite_steps")]
    errors = sum("error" in m for r in result.values() for m in [r["baseline"], *r["trainers"].values()])
    summary = (f"MHSVMTrainer 3d_fullres {mhsvm['time_ratio']:.2f}x nnUNetTrainer per iteration"
               if "time_ratio" in mhsvm else f"MHSVMTrainer 3d_fullres: {mhsvm.get('error', 'no baseline')}")
    summary += (f"; {errors} not measured" if errors else "") + \
        (f"; non-finite steps skipped: {', '.join(nonfinite)}" if nonfinite else "")
    return {"iters": TRAINER_ITERS, "mixed_precision": "the trainers' own train_step: torch.autocast on CUDA "
            "(float16, torch's default) with nnU-Net's GradScaler", "configurations": result, "summary": summary}


def models(deadline: Deadline, quick: bool = False, device: str = "cuda") -> dict:
    """Section 6: inference latency and peak memory (``medmamba.evaluation.efficiency.run_sweep``, float32, batch
    1) of ``GOAL_MODELS`` and SwinUNETR at ``benchmarks/models.py``'s goal sizes, and their ratios."""
    from medmamba.evaluation.efficiency import run_sweep

    models_bench = bench("models")
    goal, against = models_bench.GOAL, models_bench.GOAL["against"]
    rows, verdicts = {}, []
    for dims, edge in goal["sizes"].items():
        dim_rows = []
        for name in (against, *GOAL_MODELS):
            if deadline.expired():
                dim_rows.append({"model": name, "baseline": name == against, "size": edge,
                                 "error": "not measured (time box)"})
                continue
            try:
                dim_rows += run_sweep([name], [edge], dims=dims, device=device, repeats=3, warmup=1, baselines=False,
                                      progress=False)["results"]
            except Exception as err:  # noqa: BLE001 - recorded in the JSON
                dim_rows.append({"model": name, "baseline": name == against, "size": edge, "error": _one_line(err)})
            _free_memory()
        rows[f"{dims}d"] = dim_rows
        swin = next(r for r in dim_rows if r["model"] == against)
        ratios = {r["model"]: r for r in models_bench.ratios(dim_rows) if r["baseline"] == against}
        for name in GOAL_MODELS:
            own = next(r for r in dim_rows if r["model"] == name)
            verdict = {"model": name, "dims": dims, "size": edge}
            if "error" in swin or "error" in own:
                verdict["note"] = "not both measured: " + "; ".join(f"{r['model']}: {r['error']}"
                                                                    for r in (swin, own) if "error" in r)
            else:
                verdict.update(memory_ratio=ratios[name].get("peak_memory_mb_ratio"),
                               latency_ratio=ratios[name].get("latency_ms_ratio"))
            verdicts.append(verdict)
    compared = [v for v in verdicts if v.get("memory_ratio") is not None and v.get("latency_ratio") is not None]
    summary = (f"{len(compared)}/{len(verdicts)} comparisons with SwinUNETR"
               + (f"; memory ratio up to {max(v['memory_ratio'] for v in compared):.2f}, latency ratio up to "
                  f"{max(v['latency_ratio'] for v in compared):.2f}" if compared else ""))
    return {"goal": goal, "rows": rows, "verdicts": verdicts, "summary": summary}


SECTION_FUNCTIONS = {"correctness": correctness, "networks_amp": networks_amp, "kernel_speed": kernel_speed,
                     "first_call": first_call, "trainers": trainers, "models": models}


# ---------------------------------------------------------------------------------------------------------------
# Bars, section runner, output

def _bar(bar: str, value, met: bool | None, note: str = "") -> dict:
    return {"bar": bar, "rule": BARS[bar], "value": value, "met": met, "note": note}


def _section_data(sections: dict, name: str) -> tuple[dict | None, str]:
    """A section's record when it ran without error, else None and what happened."""
    section = sections.get(name)
    if section is None:
        return None, f"section {name} not run"
    if section["status"] != "ok":
        return None, f"section {name}: {section.get('error', section['status'])}"
    return section, ""


def evaluate_bars(sections: dict) -> list[dict]:
    """The issue's bars from the sections' records.

    Args:
        sections: ``{section name: record}`` as the run writes them (``status`` "ok" or "error", plus the data).

    Returns:
        One dict per bar: ``bar``, ``rule``, ``value`` (the worst measured figure), ``met`` (True, False, or None
        where it could not be measured) and ``note``.
    """
    bars = []
    # correctness: a failed or unrun check or an errored section fails it; a section not run leaves it unmeasured
    failed, notes, errored, unmeasured = 0, [], False, False
    for name in ("correctness", "networks_amp"):
        section, note = _section_data(sections, name)
        if section is None:
            errored, unmeasured = errored or name in sections, unmeasured or name not in sections
            notes.append(note)
            continue
        failed += len(section["failed"]) + len(section["not_checked"])
    met = False if errored or failed else (None if unmeasured else True)
    bars.append(_bar("correctness", failed, met, "; ".join(notes)))

    speed, note = _section_data(sections, "kernel_speed")
    cases = speed["scan"]["cases"] if speed else []
    ratios = [c["speedup_fwd_bwd_vs_mamba_ssm"] for c in cases if "speedup_fwd_bwd_vs_mamba_ssm" in c]
    if ratios:
        bars.append(_bar("scan_vs_mamba_ssm", min(ratios), min(ratios) >= MAMBA_SSM_RATIO_MIN))
    else:
        bars.append(_bar("scan_vs_mamba_ssm", None, None, speed["scan"]["mamba_ssm"] if speed else note))
    fractions = [c["triton_fwd_copy_fraction"] for c in cases if c["L"] >= BANDWIDTH_MIN_L]
    bars.append(_bar("scan_fwd_bandwidth", min(fractions), min(fractions) >= BANDWIDTH_FRACTION_MIN) if fractions
                else _bar("scan_fwd_bandwidth", None, None, note or f"no case with L >= {BANDWIDTH_MIN_L} measured"))
    for bar, key in (("cross_scan_fused", "cross_scan"), ("cross_scan_permutation", "cross_scan_permutation")):
        measured = speed.get(key, {}) if speed else {}
        speedups = [s for c in measured.get("cases", []) for s in c.get("speedup_triton_vs_torch", {}).values()]
        bars.append(_bar(bar, min(speedups), min(speedups) >= CROSS_SCAN_SPEEDUP_MIN) if speedups
                    else _bar(bar, None, None, note or measured.get("note", "not measured")))

    trained, note = _section_data(sections, "trainers")
    mhsvm = trained["configurations"]["3d_fullres"]["trainers"]["MHSVMTrainer"] if trained else {}
    bars.append(_bar("mhsvm_trainer_3d", mhsvm["time_ratio"], mhsvm["time_ratio"] <= MHSVM_TIME_RATIO_MAX)
                if "time_ratio" in mhsvm else _bar("mhsvm_trainer_3d", None, None, note or mhsvm.get("error", "")))

    measured_models, note = _section_data(sections, "models")
    verdicts = measured_models["verdicts"] if measured_models else []
    for bar, key, limit in (("models_memory", "memory_ratio", "memory_ratio_max"),
                            ("models_latency", "latency_ratio", "latency_ratio_max")):
        values = [v[key] for v in verdicts if v.get(key) is not None]
        unmeasured = "; ".join(f"{v['model']} {v['dims']}d {v['note']}" for v in verdicts if "note" in v)
        if values:
            worst = max(values)
            bars.append(_bar(bar, worst, worst <= measured_models["goal"][limit], unmeasured))
        else:
            bars.append(_bar(bar, None, None, note or unmeasured))
    return bars


def bar_line(bar: dict) -> str:
    """One printed line for a bar: verdict, value, rule and note."""
    verdict = {True: "MET", False: "FAILED", None: "NOT MEASURED"}[bar["met"]]
    value = "" if bar["value"] is None else f" ({bar['value']:.3g})"
    return f"bar {bar['bar']:<23} {verdict}{value}: {bar['rule']}" + (f" [{bar['note']}]" if bar["note"] else "")


def run_section(name: str, fn, budget_s: float, **kwargs) -> dict:
    """Run one section in its own try block and time box.

    Args:
        name: the section's name.
        fn: ``fn(deadline, **kwargs) -> dict`` (with a ``summary`` line).
        budget_s: its time box in seconds.
        **kwargs: passed to ``fn``.

    Returns:
        ``status`` ("ok" or "error"), ``seconds``, ``budget_s``, ``commit``, ``finished`` and the section's data,
        or ``error`` and ``traceback`` (its last lines) when it raised.
    """
    started = time.perf_counter()
    record = {"status": "ok"}
    try:
        record.update(fn(Deadline(budget_s), **kwargs))
    except Exception as err:  # noqa: BLE001 - recorded; the other sections still run
        record = {"status": "error", "error": _one_line(err), "traceback": traceback.format_exc().splitlines()[-12:]}
    finally:
        _free_memory()
    record.update(seconds=round(time.perf_counter() - started, 1), budget_s=budget_s, commit=git_commit(),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return record


def section_line(name: str, record: dict) -> str:
    """One printed line for a section: name, verdict, summary, time against its box."""
    if record["status"] == "error":
        verdict, text = "ERROR", record["error"]
    else:
        verdict = {True: "PASS", False: "FAIL"}.get(record.get("passed"), "DONE")
        text = record.get("summary", "")
    return f"gpu-check: {name:<13} {verdict:<5} {text} ({record['seconds']:.0f} s of {record['budget_s']:.0f} s)"


@functools.cache
def git_commit() -> str | None:
    """The checkout's commit, with "+changes" when files differ from it (None outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              encoding="utf-8", errors="replace",
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, encoding="utf-8", errors="replace", check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def _jsonable(value):
    """``value`` with non-finite floats as strings ("nan", "inf"): the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` to a temporary name beside ``path``, then rename it (a reader never sees half a file).

    Args:
        result: the results (non-finite floats are written as strings).
        path: the JSON file.
    """
    text = json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n"
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(text, encoding="utf-8")


def _bar_chart(ax, labels: list[str], series: dict[str, list], limit: float | None, ylabel: str, title: str) -> None:
    if not labels:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    else:
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [math.nan if v is None else v for v in values], width, label=label)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
        if limit is not None:
            ax.axhline(limit, color="k", ls="--", lw=1, label=f"bar {limit:g}")
        ax.legend(fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)


def plot(result: dict, path: Path) -> None:
    """Six panels from a results dict (any section may be missing: its panels say "not measured").

    Args:
        result: the results as written to the JSON.
        path: the PNG to write (through a temporary name).
    """
    from medmamba.evaluation import report

    plt = report.pyplot()
    sections = result.get("sections", {})
    ok = {name: s for name, s in sections.items() if s.get("status") == "ok"}
    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    (scan_ax, bw_ax, cross_ax), (time_ax, mem_ax, model_ax) = axes
    cases = ok.get("kernel_speed", {}).get("scan", {}).get("cases", [])
    groups = sorted({(c["dtype"], c["dim"]) for c in cases})
    for dtype, dim in groups:
        sel = sorted((c for c in cases if (c["dtype"], c["dim"]) == (dtype, dim)), key=lambda c: c["L"])
        for key, style in (("triton_fwd_bwd_ms", "-o"), ("mamba_ssm_fwd_bwd_ms", "--s")):
            points = [(c["L"], c[key]) for c in sel if key in c]
            if points:
                scan_ax.plot(*zip(*points), style, label=f"{key.split('_fwd')[0]} {dtype} dim {dim}")
        for key, style in (("triton_fwd_copy_fraction", "-o"), ("triton_fwd_bwd_copy_fraction", ":x")):
            bw_ax.plot(*zip(*[(c["L"], c[key]) for c in sel]), style,
                       label=f"{key.removeprefix('triton_').removesuffix('_copy_fraction')} {dtype} dim {dim}")
    for ax, title in ((scan_ax, "selective scan fwd+bwd (ms)"), (bw_ax, "fraction of the device copy's bandwidth")):
        ax.set_title(title, fontsize=9)
        if not groups:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L")
        ax.legend(fontsize=6)
    if groups:
        scan_ax.set_yscale("log")
        bw_ax.axhline(BANDWIDTH_FRACTION_MIN, color="k", ls="--", lw=1)
        bw_ax.axvline(BANDWIDTH_MIN_L, color="grey", ls=":", lw=1)
    speed = ok.get("kernel_speed", {})
    cross = [c for key in ("cross_scan", "cross_scan_permutation") for c in speed.get(key, {}).get("cases", [])
             if "speedup_triton_vs_torch" in c]
    ops = list(cross[0]["speedup_triton_vs_torch"]) if cross else []
    _bar_chart(cross_ax, [f"{c['name']} {c['dtype']}" for c in cross],
               {op: [c["speedup_triton_vs_torch"].get(op) for c in cross] for op in ops}, CROSS_SCAN_SPEEDUP_MIN,
               "speed-up (x)", "Triton cross-scan/merge vs the torch path")
    configurations = ok.get("trainers", {}).get("configurations", {})
    names = list(dict.fromkeys(n for r in configurations.values() for n in r["trainers"]))
    for ax, key, limit, title in ((time_ax, "time_ratio", MHSVM_TIME_RATIO_MAX, "time per iteration"),
                                  (mem_ax, "mem_ratio", None, "peak memory")):
        _bar_chart(ax, names, {c: [r["trainers"].get(n, {}).get(key) for n in names]
                               for c, r in configurations.items()}, limit, "x nnUNetTrainer", f"trainers: {title}")
    verdicts = [v for v in ok.get("models", {}).get("verdicts", []) if v.get("memory_ratio") is not None]
    limits = [ok["models"]["goal"][key] for key in ("memory_ratio_max", "latency_ratio_max")] if verdicts else []
    _bar_chart(model_ax, [f"{v['model']} {v['dims']}d" for v in verdicts],
               {key: [v[key] for v in verdicts] for key in ("memory_ratio", "latency_ratio")}, None,
               "x SwinUNETR", "inference vs SwinUNETR" + (" (bars {:g} memory, {:g} latency)".format(*limits)
                                                          if limits else ""))
    for limit in limits:
        model_ax.axhline(limit, color="k", ls="--", lw=1)
    fig.suptitle(f"gpu-check on {result.get('gpu', '?')} ({result.get('commit') or 'no commit'})", fontsize=10)
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------

def _parse_sections(text: str | None, quick: bool, parser: argparse.ArgumentParser) -> list[str]:
    if text is None:
        return list(QUICK_SECTIONS if quick else SECTIONS)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        parser.error(f"--sections {text!r}: unknown section(s) {', '.join(unknown) or '(none given)'}; choose from "
                     f"{', '.join(SECTIONS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for what each section measures.")
    parser.add_argument("--quick", action="store_true", help="correctness, networks_amp and kernel_speed at two sizes")
    parser.add_argument("--sections", help=f"comma-separated subset of {', '.join(SECTIONS)}; merged into the "
                                           "existing JSON")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every section's time box")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="folder of the JSON and PNG")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu" only for the child under tests
    parser.add_argument("--first-call-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sections = _parse_sections(args.sections, args.quick, parser)
    if args.budget_scale <= 0:
        parser.error(f"--budget-scale {args.budget_scale}: must be positive")
    if args.first_call_child:
        print(json.dumps(first_call_child(args.device)))
        return 0
    if not torch.cuda.is_available():
        print(NO_GPU_LINE, file=sys.stderr)
        return NO_GPU_EXIT

    import triton

    from medmamba.evaluation.efficiency import machine_description

    gpu = bench("trainers").device_slug("cuda")
    stem = args.out_dir / f"gpu-check-{gpu}{'-quick' if args.quick else ''}"
    json_path = stem.with_suffix(".json")
    previous = {}
    if args.sections is not None and json_path.is_file():
        with contextlib.suppress(ValueError):
            previous = json.loads(json_path.read_text(encoding="utf-8")).get("sections", {})
    budgets = {name: (QUICK_BUDGETS_S if args.quick else BUDGETS_S).get(name, BUDGETS_S[name]) * args.budget_scale
               for name in sections}
    result = {"benchmark": "gpu-check", "gpu": torch.cuda.get_device_name(), "device": machine_description("cuda"),
              "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
              "mamba_ssm": mamba_ssm_scan()[1] or "importable", "quick": args.quick, "commit": git_commit(),
              "command": " ".join(["python benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "budgets_s": budgets, "sections": dict(previous), "bars": []}
    started = time.perf_counter()
    for name in sections:
        record = run_section(name, SECTION_FUNCTIONS[name], budgets[name], quick=args.quick)
        result["sections"][name] = record
        print(section_line(name, record), flush=True)
        result["bars"] = evaluate_bars(result["sections"])
        result["seconds_total"] = round(time.perf_counter() - started, 1)
        write_json(result, json_path)
    plot(result, stem.with_suffix(".png"))
    for bar in result["bars"]:
        print(bar_line(bar))
    print(f"gpu-check: wrote {json_path} and {stem.with_suffix('.png').name} in {result['seconds_total']:.0f} s")
    errored = any(result["sections"][name]["status"] != "ok" for name in sections)
    return 1 if errored or any(bar["met"] is False for bar in result["bars"]) else 0


if __name__ == "__main__":
    sys.exit(main())
