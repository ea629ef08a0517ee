"""Cross-scan/merge kernels against the torch path (permute / flip / flatten, gathers), same run, same inputs; and
permutation routes (MHS-VM's patterns, through index arrays) against the axis-order routes, same count.

`run(device, quick)` returns the figures; `python benchmarks/cross_scan_bench.py [--device cuda] [--quick]` writes
benchmarks/results/cross-scan-<device>.json and a bar plot beside it. CUDA: fused Triton against torch. CPU: the
numba passes (what ``auto`` runs there) against torch; the permutation bar compares the permutation routes on numba
with the axis-order routes on whichever CPU backend is faster for that op.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Callable

import torch

from medmamba.evaluation.efficiency import interleaved_ms, machine_description
from medmamba.io_utils import atomic_file
from medmamba.kernels import ROUTES_2D, ROUTES_3D, cross_merge, cross_scan, mhs_routes

BAR_SPEEDUP = 1.5  # fused cross-scan at least 1.5x the unfused torch path
BAR_PERMUTATION = 1.5  # permutation routes at most 1.5x the axis-order routes' time (CPU)
# as many permutation routes as the axis-order set: MHS-VM's spiral (2D), continuous and half the diagonal (3D)
PERMUTATION_ROUTES = {"2d": mhs_routes("S", 2), "3d": mhs_routes("C", 3) + mhs_routes("X", 3)[:2]}


def _ops(x: torch.Tensor, routes, backend: str) -> dict[str, Callable[[], object]]:
    """The four timed operations of one route set on one backend."""
    spatial = tuple(x.shape[2:])
    y = torch.randn(x.shape[0], len(routes), x.shape[1], math.prod(spatial), device=x.device, dtype=x.dtype)
    x_grad = x.detach().clone().requires_grad_(True)
    grad_out = torch.randn(x.shape[0], x.shape[1], math.prod(spatial), device=x.device, dtype=x.dtype)

    def fwd_bwd():
        out = cross_merge(cross_scan(x_grad, routes, backend=backend), routes, spatial_shape=spatial, backend=backend)
        out.backward(grad_out)
        x_grad.grad = None

    no_grad = torch.no_grad()
    return {"scan": no_grad(lambda: cross_scan(x, routes, backend=backend)),
            "merge": no_grad(lambda: cross_merge(y, routes, spatial_shape=spatial, backend=backend)),
            "scan+merge fwd": no_grad(lambda: cross_merge(cross_scan(x, routes, backend=backend), routes,
                                                          spatial_shape=spatial, backend=backend)),
            "scan+merge fwd+bwd": fwd_bwd}


def _measure(x: torch.Tensor, routes, backend: str, repeats: int) -> dict[str, float]:
    """CUDA: triton's do_bench median of each operation, in milliseconds."""
    import triton.testing

    return {op: triton.testing.do_bench(fn, warmup=25, rep=repeats, return_mode="median")
            for op, fn in _ops(x, routes, backend).items()}


def _bytes_moved(x: torch.Tensor, k: int) -> dict[str, int]:
    """Minimum DRAM traffic: scan reads x once and writes K copies, merge the reverse; bwd mirrors fwd."""
    one = x.numel() * x.element_size()
    return {"scan": (1 + k) * one, "merge": (1 + k) * one, "scan+merge fwd": 2 * (1 + k) * one,
            "scan+merge fwd+bwd": 4 * (1 + k) * one}


def run(device: str = "cpu", quick: bool = False) -> dict:
    dev = torch.device(device)
    on_gpu = dev.type == "cuda"
    shapes = [("2d", (2, 96, 128, 128), ROUTES_2D), ("3d", (1, 48, 64, 64, 64), ROUTES_3D)]
    if quick:
        shapes = [("2d", (1, 32, 64, 64), ROUTES_2D), ("3d", (1, 16, 32, 32, 32), ROUTES_3D)]
    dtypes = [torch.float32, torch.bfloat16] if on_gpu else [torch.float32]
    repeats = (20 if on_gpu else 5) if quick else (200 if on_gpu else 10)  # GPU: milliseconds; CPU: rounds
    kernel = "triton" if on_gpu else "numba"
    cases = []
    for name, shape, routes in shapes:
        for dtype in dtypes:
            x = torch.randn(shape, device=dev, dtype=dtype)
            case = {"name": name, "shape": list(shape), "routes": len(routes), "dtype": str(dtype).split(".")[-1]}
            sets = {f"{prefix}{backend}_ms": (route_set, backend) for backend in ("torch", kernel)
                    for prefix, route_set in (("", routes), ("permutation_", PERMUTATION_ROUTES[name]))}
            if on_gpu:
                case.update({key: _measure(x, *config, repeats) for key, config in sets.items()})
            else:
                # interleaved, so that the page faults of fresh outputs fall on all configurations alike
                ops = {key: _ops(x, *config) for key, config in sets.items()}
                times = interleaved_ms({(key, op): fn for key, fns in ops.items() for op, fn in fns.items()}, repeats)
                case.update({key: {op: times[key, op] for op in fns} for key, fns in ops.items()})
            moved = _bytes_moved(x, len(routes))
            case[f"speedup_{kernel}_vs_torch"] = {k: case["torch_ms"][k] / v for k, v in case[f"{kernel}_ms"].items()}
            case[f"{kernel}_gb_per_s"] = {k: b / case[f"{kernel}_ms"][k] / 1e6 for k, b in moved.items()}
            if not on_gpu:  # the permutation routes as auto runs them, against the faster axis-order backend
                case["permutation_vs_axis"] = {
                    k: v / min(case["torch_ms"][k], case["numba_ms"][k])
                    for k, v in case["permutation_numba_ms"].items()}
            cases.append(case)
            del x
    result = {
        "benchmark": f"cross-scan/merge: {kernel} vs the torch path; permutation vs axis-order routes",
        "device": machine_description("cuda" if on_gpu else "cpu"),
        "threads": None if on_gpu else torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": quick,
        "timing": (f"triton.testing.do_bench median over {repeats} ms" if on_gpu else
                   f"minimum over {repeats} rounds after a warm-up round, configurations interleaved") +
                  ", milliseconds",
        "load_average_1min": os.getloadavg()[0],
        "cases": cases,
    }
    if on_gpu:
        worst = min(min(c["speedup_triton_vs_torch"].values()) for c in cases)
        result["bar"] = {"fused_speedup_at_least": BAR_SPEEDUP, "worst_measured": worst, "met": worst >= BAR_SPEEDUP}
    else:
        worst = max(max(c["permutation_vs_axis"].values()) for c in cases)
        result["permutation_bar"] = {"permutation_vs_axis_at_most": BAR_PERMUTATION, "worst_measured": worst,
                                     "met": worst <= BAR_PERMUTATION}
    return result


def _plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result["cases"]
    ops = list(cases[0]["torch_ms"])
    fig, axes = plt.subplots(1, len(cases), figsize=(4.5 * len(cases), 4), squeeze=False)
    kernel = "triton" if "triton_ms" in cases[0] else "numba"
    bars = [(f"{prefix}{backend}_ms", f"{backend}, {label} routes") for backend in ("torch", kernel)
            for prefix, label in (("", "axis"), ("permutation_", "permutation"))]
    width = 0.8 / len(bars)
    for ax, case in zip(axes[0], cases):
        for j, (key, label) in enumerate(bars):
            ax.bar([i + (j - 1.5) * width for i in range(len(ops))], [case[key][o] for o in ops], width, label=label)
        xs = range(len(ops))
        ax.set_xticks(list(xs), ops, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title(f"{case['name']} {tuple(case['shape'])} {case['dtype']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(f"cross-scan/merge on {result['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    args = parser.parse_args()
    result = run(args.device, quick=args.quick)
    stem = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                        f"cross-scan-{torch.device(args.device).type}")
    with atomic_file(stem + ".json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    with atomic_file(stem + ".png", suffix=".png") as tmp:
        _plot(result, str(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
