"""Efficiency profile of a network: parameters, FLOPs (scans included), latency and peak memory of a forward pass.

FLOPs
    ``torch.utils.flop_counter.FlopCounterMode`` counts matmuls, convolutions and attention, one multiply-add
    as **2** FLOPs (papers that use fvcore/thop report multiply-adds, about half our number), and selective scans:
    every scan is the torch operator ``medmamba::selective_scan``, whose FLOP formula
    (`medmamba.kernels.selective_scan.selective_scan_flops`) is registered with the counter. Per call with ``u``
    of shape (b, d, L) and ``A`` of shape (d, N)::

        8 * b*d*N*L      per state element and step: delta*A (1), exp (1), delta*B*u (2),
                         h = dA*h + dBu (2), y += h*C (2)
      + 2 * b*d*L        if D is given: y += D*u
      + 2 * b*d*L        if delta_bias / delta_softplus: add bias (1), softplus (1)
      + 2 * b*d*L        if z is given: y *= silu(z) (silu 1, multiply 1)

    (mamba_ssm and VMamba count ``9*b*d*N*L`` multiply-adds-or-ops for the same recurrence; the formula above
    counts every operation once, exp as one.) The counter sees the operator, not the ops inside it, so a backend
    that calls matmuls is not counted twice. ``scan_calls`` in the result shows how many scans ran.

Latency
    Median wall time of ``repeats`` forward passes under ``torch.inference_mode`` after ``warmup`` passes, with
    ``torch.cuda.synchronize`` around each pass on CUDA.

Peak memory
    CUDA: ``torch.cuda.max_memory_allocated`` during one forward pass, minus what was allocated before it
    (weights and input), i.e. the activations and workspaces the pass needs (``memory_method="cuda_allocator"``).
    CPU: process RSS is unreliable for this (glibc keeps freed memory; tracemalloc does not see torch), so the
    pass runs under ``torch.profiler`` with ``profile_memory=True`` and the allocations/frees it attributes to each
    operator are replayed in time order, allocations at the operator's start and frees at its end: the peak of
    live tensor bytes allocated by torch during the pass (``memory_method="torch_profiler"``). The torch scan's
    buffers, which it keeps between calls, are released first so that the pass allocates and counts them. It does
    not include allocations outside torch's allocator (e.g. oneDNN scratch buffers).
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import medmamba.kernels.selective_scan  # noqa: F401  (registers the scan operator and its FLOP formula)


def machine_description(device: str = "cpu") -> str:
    """The device a benchmark ran on, for its JSON: the GPU's name, or the CPU's model, cores and the vector ISA
    torch dispatches to (CPU ratios move with both)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    return f"{model} ({platform.machine()}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()})"


class _OpCalls(TorchDispatchMode):
    """Counts the calls of one operator (any overload) while active."""

    def __init__(self, packet):
        super().__init__()
        self.packet, self.calls = packet, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func.overloadpacket == self.packet
        return func(*args, **(kwargs or {}))


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements in ``model`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs of one forward pass: ``flops`` (total), ``flops_scan`` (selective scans), ``scan_calls``."""
    scan_op = torch.ops.medmamba.selective_scan
    flop_counter = FlopCounterMode(display=False)
    with torch.inference_mode(), flop_counter, _OpCalls(scan_op) as scans:
        model(x)
    flops_scan = flop_counter.get_flop_counts().get("Global", {}).get(scan_op, 0)
    return {"flops": int(flop_counter.get_total_flops()), "flops_scan": int(flops_scan), "scan_calls": scans.calls}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: nn.Module, x: torch.Tensor, repeats: int = 10, warmup: int = 2) -> list[float]:
    """Wall times (ms) of ``repeats`` forward passes after ``warmup`` passes."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(x.device)
            start = time.perf_counter()
            model(x)
            _sync(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return times


def interleaved_ms(fns: dict[Any, Any], rounds: int) -> dict[Any, float]:
    """CPU milliseconds of several functions timed alike: one warm-up call each, then ``rounds`` rounds calling
    every function once in turn; per function the minimum over the rounds (the least disturbed run). Interleaving
    puts a shared machine's load, and the cache and allocator state each call leaves, on all functions alike.

    Args:
        fns: argument-less functions by name.
        rounds: timed rounds.

    Returns:
        The minimum milliseconds by name.
    """
    best = {}
    for name, fn in fns.items():
        fn()
        best[name] = float("inf")
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def _replay_profiler_memory(prof) -> int:
    deltas = []
    for event in prof.events():
        usage = event.self_cpu_memory_usage
        if usage > 0:
            deltas.append((event.time_range.start, usage))
        elif usage < 0:
            deltas.append((event.time_range.end, usage))
    live = peak = 0
    for _, usage in sorted(deltas, key=lambda item: item[0]):
        live += usage
        peak = max(peak, live)
    return peak


def measure_peak_memory(model: nn.Module, x: torch.Tensor) -> tuple[int, str]:
    """Peak bytes allocated by one forward pass beyond what was live before it, and the method used."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - base, "cuda_allocator"
    from torch.profiler import ProfilerActivity, profile

    from medmamba.kernels.selective_scan_torch import release_buffers

    release_buffers()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    return _replay_profiler_memory(prof), "torch_profiler"


def profile_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Profile ``model`` on a random input of ``input_shape`` = (batch, channels, *spatial).

    Returns ``params``, ``flops`` (2 per multiply-add, scans included), ``flops_scan``, ``scan_calls``,
    ``latency_ms`` (median), ``latency_ms_min``, ``latency_ms_max``, ``peak_memory_bytes``, ``peak_memory_mb``,
    ``memory_method``, ``device``, ``threads`` (CPU threads torch used), ``dtype``, ``input_shape``, ``repeats``
    and ``warmup``.
    """
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    x = torch.randn(*input_shape, device=device, dtype=dtype)
    result: dict[str, Any] = {"params": count_parameters(model)}
    result.update(count_flops(model, x))
    times = measure_latency(model, x, repeats=repeats, warmup=warmup)
    peak, method = measure_peak_memory(model, x)
    result.update(
        latency_ms=statistics.median(times),
        latency_ms_min=min(times),
        latency_ms_max=max(times),
        peak_memory_bytes=int(peak),
        peak_memory_mb=peak / 2**20,
        memory_method=method,
        device=str(device),
        threads=torch.get_num_threads(),
        dtype=str(dtype).removeprefix("torch."),
        input_shape=list(input_shape),
        repeats=repeats,
        warmup=warmup,
    )
    return result


# ---------------------------------------------------------------------------------------------------------------
# Sweeps over input sizes (``medmamba evaluate efficiency``), with nnU-Net and MONAI reference networks

BASELINES = ("plainconvunet", "swinunetr")


def build_baseline(name: str, dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Reference networks at fixed, documented configurations (the lines every plot is compared against).

    - ``plainconvunet``: nnU-Net's PlainConvUNet (dynamic_network_architectures) as nnU-Net plans it for a
      mid-sized patch: 5 stages, features 32-64-128-256-320 (3D) or 32-64-128-256-512 (2D), 3x3(x3) kernels,
      2 convs per stage, instance norm, leaky ReLU; input edges must be multiples of 16 and at least 32.
    - ``swinunetr``: MONAI's SwinUNETR with ``feature_size=48`` (the published BTCV configuration);
      input edges must be multiples of 32 and at least 64 (its instance norms need a bottleneck above 1 voxel).
    """
    if name == "plainconvunet":
        from dynamic_network_architectures.architectures.unet import PlainConvUNet

        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
        features = [32, 64, 128, 256, 320] if dims == 3 else [32, 64, 128, 256, 512]
        return PlainConvUNet(in_channels, 5, features, conv, 3, [1, 2, 2, 2, 2], 2, out_channels, 2,
                             conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                             nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    if name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=48, spatial_dims=dims)
    raise ValueError(name)


def run_sweep(models: list[str], sizes: list[int], dims: int = 3, device: str = "cpu", batch: int = 1,
              in_channels: int = 1, out_channels: int = 2, preset: str | None = None, repeats: int = 5,
              warmup: int = 1, baselines: bool = True, progress: bool = True) -> dict[str, Any]:
    """:func:`profile_model` for every model at every cubic (square) input edge in ``sizes``.

    A model that cannot run at a size (e.g. an edge its downsampling cannot divide) gets a row with ``error``.
    """
    from tqdm import tqdm

    import medmamba
    from medmamba.errors import MedMambaError

    names = list(dict.fromkeys(models + (list(BASELINES) if baselines else [])))
    known = set(medmamba.list_models())
    unknown = [n for n in names if n not in known and n not in BASELINES]
    if unknown:
        raise MedMambaError(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(sorted(known))}, "
                            f"baselines: {', '.join(BASELINES)}")
    if not sizes or min(sizes) < 1:
        raise MedMambaError(f"--sizes {sizes}: need positive input edges")
    rows = []
    for name in tqdm(names, desc="efficiency", disable=not progress):
        try:
            if name in BASELINES and name not in known:
                model = build_baseline(name, dims, in_channels, out_channels)
            else:
                model = medmamba.create_model(name, spatial_dims=dims, in_channels=in_channels,
                                              out_channels=out_channels, preset=preset)
        except (ValueError, TypeError, KeyError) as err:
            raise MedMambaError(f"model {name}: cannot build it for {dims}D ({err})") from None
        for size in sorted(sizes):
            shape = (batch, in_channels, *([size] * dims))
            row: dict[str, Any] = {"model": name, "baseline": name in BASELINES, "size": size,
                                   "voxels": size**dims, "params": count_parameters(model)}
            try:
                row.update(profile_model(model, shape, device=device, repeats=repeats, warmup=warmup))
            except (RuntimeError, ValueError, AssertionError) as err:
                row.update(error=str(err).strip().splitlines()[0][:300], input_shape=list(shape))
            rows.append(row)
    meta = {"dims": dims, "device": device, "batch": batch, "in_channels": in_channels,
            "out_channels": out_channels, "preset": preset, "repeats": repeats, "warmup": warmup,
            "torch": torch.__version__, "flops_convention": "2 FLOPs per multiply-add; selective scans included",
            "latency": "median ms of the repeats", "memory": "peak bytes beyond weights and input (see memory_method)"}
    return {"task": "efficiency", "results": rows, "meta": meta}


def write_sweep_outputs(result: dict[str, Any], out_dir, overwrite: bool = False) -> None:
    """efficiency.json, efficiency.csv and efficiency.png (log-log: FLOPs, latency, memory against voxels)."""
    from pathlib import Path

    from medmamba.evaluation import report
    from medmamba.io_utils import atomic_dir

    rows = result["results"]
    plt = report.pyplot()
    panels = (("flops", "GFLOPs", 1e-9), ("latency_ms", "latency (ms)", 1.0),
              ("peak_memory_mb", "peak memory (MiB)", 1.0))
    with atomic_dir(Path(out_dir), "evaluate efficiency", overwrite) as tmp:
        report.write_json(tmp / "efficiency.json", result)
        columns = ["model", "baseline", "size", "voxels", "params", "flops", "flops_scan", "scan_calls", "latency_ms",
                   "peak_memory_mb", "memory_method", "device", "error"]
        report.write_csv(tmp / "efficiency.csv", rows, columns)
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        for ax, (key, label, scale) in zip(axes, panels):
            for name in dict.fromkeys(r["model"] for r in rows):
                ok = [r for r in rows if r["model"] == name and "error" not in r and r.get(key)]
                if not ok:
                    continue
                style = "--s" if ok[0]["baseline"] else "-o"
                ax.loglog([r["voxels"] for r in ok], [r[key] * scale for r in ok], style,
                          label=f"{name} ({ok[0]['params'] / 1e6:.2f} M)")
            ax.set_xlabel("input voxels" if result["meta"]["dims"] == 3 else "input pixels")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{result['meta']['dims']}D, batch {result['meta']['batch']}, {result['meta']['device']}")
        fig.tight_layout()
        fig.savefig(tmp / "efficiency.png", dpi=100)
        plt.close(fig)
