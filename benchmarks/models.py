"""Network efficiency against input size, beside nnU-Net's PlainConvUNet and MONAI's SwinUNETR in the same run.

    python benchmarks/models.py [--device cpu|cuda] [--quick] [--threads N] [--catalog] [--no-sweep] [--goal]

- Sweep (default): every registered segmentation net (default configuration, 1 input channel, 2 classes, batch 1)
  and the two baselines (`medmamba.evaluation.efficiency.build_baseline`) at square / cubic input edges:
  parameters, FLOPs (scans included, 2 per multiply-add), median latency and peak memory, profiled by
  `medmamba.evaluation.efficiency.run_sweep`; every model's ratios against each baseline at the same size.
  Sizes: GPU 2D 128..1024, 3D 32..160; CPU smaller (--quick: 2D 32, 64; 3D 32).
  Writes benchmarks/results/models-<device>.json and models-<device>.png.
- --goal (GPU; issue 4's bar): at 1248^2 (2D) and 256^3 (3D), inference peak memory <= 20% of SwinUNETR's and
  latency <= half of SwinUNETR's, per segmentation net. On CPU it is recorded as not measured.
- --catalog: every registry entry at its reference configuration ('paper' preset, reference input, batch 1) via
  `measure_catalog` -> benchmarks/results/catalog-<device>.json, which `medmamba catalog` merges.
  --catalog-dims 2|3 measures the entries that have a reference input in those dims at it instead
  (catalog-<device>-<dims>d.json; for example mambair in 3D at 32^3).
  FLOPs are counted on the meta device; each entry's real passes run in a child process limited to
  --entry-timeout seconds (latency passes fit in --entry-budget seconds). An entry that cannot finish (time limit,
  out of memory) keeps params and FLOPs, with latency None and the reason. The JSON is written after every entry;
  a rerun skips entries already measured at their current reference configuration (--force re-measures).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

import medmamba
from medmamba.catalog import build_reference_model, is_current, load_measurements, reference_config
from medmamba.evaluation import report
from medmamba.evaluation.efficiency import (
    BASELINES,
    count_flops,
    count_parameters,
    machine_description,
    measure_latency,
    measure_peak_memory,
    run_sweep,
)
from medmamba.io_utils import atomic_file
from medmamba.registry import list_models, model_entry

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {
    "cuda": {2: [128, 256, 512, 1024], 3: [32, 64, 96, 128, 160]},
    "cpu": {2: [64, 128, 256], 3: [32, 64]},
    "cpu-quick": {2: [32, 64], 3: [32]},
}
GOAL = {"sizes": {2: 1248, 3: 256}, "memory_ratio_max": 0.2, "latency_ratio_max": 0.5, "against": "swinunetr"}
RATIO_KEYS = ("params", "flops", "latency_ms", "peak_memory_mb")


def ratios(rows: list[dict]) -> list[dict]:
    """Each model's figures divided by each baseline's at the same size (same run, same device)."""
    base = {(r["model"], r["size"]): r for r in rows if r["baseline"] and "error" not in r}
    out = []
    for r in rows:
        if r["baseline"] or "error" in r:
            continue
        for b in BASELINES:
            ref = base.get((b, r["size"]))
            if ref is None:
                continue
            out.append({"model": r["model"], "size": r["size"], "baseline": b,
                        **{f"{k}_ratio": r[k] / ref[k] for k in RATIO_KEYS if r.get(k) and ref.get(k)}})
    return out


def sweep(device: str, sizes: dict[int, list[int]], repeats: int, warmup: int) -> dict[int, dict]:
    results = {}
    for dims, edges in sizes.items():
        models = medmamba.list_models(task="segmentation", spatial_dims=dims)
        result = run_sweep(models, edges, dims=dims, device=device, repeats=repeats, warmup=warmup)
        result["ratios"] = ratios(result["results"])
        results[dims] = result
    return results


def goal(device: str, repeats: int, warmup: int) -> dict:
    if device != "cuda":
        return {**GOAL, "measured": False, "reason": "measured on a GPU only (python benchmarks/models.py --device "
                "cuda --goal)"}
    verdicts = []
    for dims, edge in GOAL["sizes"].items():
        models = medmamba.list_models(task="segmentation", spatial_dims=dims)
        rows = run_sweep(models, [edge], dims=dims, device=device, repeats=repeats, warmup=warmup)["results"]
        for ratio in ratios(rows):
            if ratio["baseline"] != GOAL["against"]:
                continue
            mem, lat = ratio.get("peak_memory_mb_ratio"), ratio.get("latency_ms_ratio")
            verdicts.append({"model": ratio["model"], "dims": dims, "size": edge, "memory_ratio": mem,
                             "latency_ratio": lat, "meets_goal": mem is not None and lat is not None
                             and mem <= GOAL["memory_ratio_max"] and lat <= GOAL["latency_ratio_max"]})
        swin_ok = any(r["model"] == GOAL["against"] and "error" not in r for r in rows)
        if not swin_ok:
            verdicts.append({"dims": dims, "size": edge, "note": "SwinUNETR did not run at this size (see rows)",
                             "rows": rows})
    return {**GOAL, "measured": True, "verdicts": verdicts}


def plot(results: dict[int, dict], path: Path) -> None:
    plt = report.pyplot()
    panels = (("params", "parameters (M)", 1e-6), ("flops", "GFLOPs", 1e-9), ("latency_ms", "latency (ms)", 1.0),
              ("peak_memory_mb", "peak memory (MiB)", 1.0))
    fig, axes = plt.subplots(len(results), len(panels), figsize=(20, 4.8 * len(results)), squeeze=False)
    for row_axes, (dims, result) in zip(axes, sorted(results.items())):
        rows = result["results"]
        for ax, (key, label, scale) in zip(row_axes, panels):
            for name in dict.fromkeys(r["model"] for r in rows):
                ok = [r for r in rows if r["model"] == name and "error" not in r and r.get(key)]
                if ok:
                    ax.loglog([r["voxels"] for r in ok], [r[key] * scale for r in ok],
                              "k--x" if ok[0]["baseline"] and name == "swinunetr" else
                              "k:s" if ok[0]["baseline"] else "-o", label=name, markersize=4)
            ax.set_xlabel(f"input {'pixels' if dims == 2 else 'voxels'} ({dims}D)")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
        row_axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"segmentation nets vs nnU-Net PlainConvUNet (dotted) and MONAI SwinUNETR (dashed), "
                 f"batch 1, {next(iter(results.values()))['meta']['device']}")
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def reference_flops(name: str, spatial_dims: int | None = None) -> dict[str, int]:
    """``params``, ``flops``, ``flops_scan`` and ``scan_calls`` of one forward pass at the reference configuration,
    counted on the meta device: no memory, no arithmetic, so even inputs too big to run here are counted."""
    model = build_reference_model(name, spatial_dims, device="meta").eval()
    x = torch.empty(reference_config(name, spatial_dims)["input_shape"], device="meta")
    return {"params": count_parameters(model), **count_flops(model, x)}


def measure_passes(name: str, device: str = "cpu", repeats: int = 3, time_budget_s: float = 300.0,
                   spatial_dims: int | None = None) -> dict[str, Any]:
    """Latency and peak memory of real forward passes at the reference configuration.

    The first pass is timed; a warm-up and up to ``repeats`` timed passes follow only while they fit in
    ``time_budget_s``, and so does the peak-memory pass (``peak_memory_mb`` is None otherwise, with the reason
    in ``memory_note``). ``latency_repeats`` / ``latency_warmup`` say what the median was taken over.
    """
    cfg = reference_config(name, spatial_dims)
    started = time.perf_counter()
    model = build_reference_model(name, spatial_dims, device=device).eval()
    x = torch.randn(cfg["input_shape"], device=device)
    times = measure_latency(model, x, repeats=1, warmup=0)
    warmup = 0
    spare = int((time_budget_s - (time.perf_counter() - started)) // (times[0] / 1e3)) - 1  # one kept for memory
    if spare >= 2:  # the first pass becomes the warm-up, then at least one timed pass
        warmup = 1
        times = measure_latency(model, x, repeats=min(repeats, spare - 1), warmup=0)
    result: dict[str, Any] = dict(latency_ms=statistics.median(times), latency_ms_min=min(times),
                                  latency_ms_max=max(times), latency_repeats=len(times), latency_warmup=warmup)
    if time.perf_counter() - started + times[0] / 1e3 <= time_budget_s:
        peak, method = measure_peak_memory(model, x)
        result.update(peak_memory_bytes=int(peak), peak_memory_mb=peak / 2**20, memory_method=method)
    else:
        result.update(peak_memory_mb=None, memory_note=f"not measured: one more {times[0] / 1e3:.0f} s pass "
                                                       f"exceeds the {time_budget_s:.0f} s budget")
    return result


def measure_entry(name: str, device: str = "cpu", counts: dict[str, int] | None = None,
                  passes: dict[str, Any] | None = None, spatial_dims: int | None = None,
                  **pass_kwargs) -> dict[str, Any]:
    """One catalog record: ``counts`` (default :func:`reference_flops`) and ``passes`` (default
    :func:`measure_passes`; give a dict with ``latency_ms`` None and a ``latency_note`` for an entry that could
    not run), with the configuration they were taken at."""
    cfg = reference_config(name, spatial_dims)
    counts = reference_flops(name, spatial_dims) if counts is None else counts
    passes = measure_passes(name, device, spatial_dims=spatial_dims, **pass_kwargs) if passes is None else passes
    return {**counts, **passes, "device": device, "preset": cfg["preset"], "input_shape": list(cfg["input_shape"]),
            "torch_threads": torch.get_num_threads(), "dtype": "float32"}


def measure_catalog(names: Iterable[str] | None = None, device: str = "cpu", path: Path | None = None,
                    progress: Callable[[str], None] | None = None, force: bool = False,
                    measure: Callable[[str], dict[str, Any]] | None = None,
                    spatial_dims: int | None = None) -> dict[str, dict[str, Any]]:
    """Measure entries (all by default) with ``measure`` (default :func:`measure_entry`) and merge each into
    ``catalog-<device>.json`` as soon as it is done (written atomically), so an interrupted run resumes: entries
    already measured at their current reference configuration are skipped unless ``force``."""
    path = Path(path) if path is not None else RESULTS / f"catalog-{device}.json"
    measure = measure if measure is not None else (lambda name: measure_entry(name, device, spatial_dims=spatial_dims))
    measured = load_measurements(path)
    todo = [name for name in (names if names is not None else list_models())
            if spatial_dims is None or spatial_dims in model_entry(name).reference_input]
    for i, name in enumerate(todo):
        if not force and is_current(name, measured.get(name), spatial_dims) and measured[name].get("device") == device:
            if progress is not None:
                progress(f"[{i + 1}/{len(todo)}] {name}: already measured, skipped")
            continue
        if progress is not None:
            progress(f"[{i + 1}/{len(todo)}] {name}: measuring")
        measured[name] = measure(name)
        with atomic_file(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return measured


def measure_in_child(name: str, device: str, threads: int, budget_s: float, timeout_s: float,
                     spatial_dims: int | None = None) -> dict:
    """An entry's catalog record: FLOPs counted here on the meta device, forward passes in a child process (so a
    pass too slow or too big for this machine cannot stall or kill the run); on a time-out or a failure, latency
    and memory are None and ``latency_note`` says why."""
    counts = reference_flops(name, spatial_dims)
    command = [sys.executable, __file__, "--catalog-entry", name, "--device", device, "--threads", str(threads),
               "--entry-budget", str(budget_s)] + (["--catalog-dims", str(spatial_dims)] if spatial_dims else [])
    machine = f"this {device.upper()} ({threads} threads)"
    note = None
    try:
        done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        note = f"not measured: the forward passes at the reference input did not finish within {timeout_s:.0f} s " \
               f"on {machine}"
    else:
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
            note = f"not measured: the forward pass failed on {machine}, exit status {done.returncode} {tail}".rstrip()
    passes = ({"latency_ms": None, "peak_memory_mb": None, "latency_note": note} if note is not None
              else json.loads(done.stdout.strip().splitlines()[-1]))
    return measure_entry(name, device, counts, passes, spatial_dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small CPU sizes, one timed repeat")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--catalog", action="store_true", help="also measure every entry at its reference config")
    parser.add_argument("--catalog-models", nargs="+", help="measure only these entries (default: all)")
    parser.add_argument("--force", action="store_true", help="re-measure catalog entries already measured")
    parser.add_argument("--entry-budget", type=float, default=240.0,
                        help="seconds of forward passes per catalog entry (timed repeats and the memory pass)")
    parser.add_argument("--entry-timeout", type=float, default=900.0,
                        help="seconds after which a catalog entry is recorded as not measured")
    parser.add_argument("--catalog-dims", type=int, choices=(2, 3),
                        help="measure the entries at their reference input in these dims (default: each entry's "
                             "first) into catalog-<device>-<dims>d.json")
    parser.add_argument("--catalog-entry", help=argparse.SUPPRESS)  # child mode: print one entry's JSON
    parser.add_argument("--no-sweep", action="store_true", help="skip the size sweep")
    parser.add_argument("--goal", action="store_true", help="issue 4's 1248^2 / 256^3 check (GPU)")
    parser.add_argument("--dims", type=int, nargs="+", choices=(2, 3), default=[2, 3],
                        help="sweep these dims only; the other dims' sweep already in the JSON is kept")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    repeats, warmup = (1, 0) if args.quick else (5, 1)
    started = time.time()
    if args.catalog_entry:
        print(json.dumps(measure_passes(args.catalog_entry, device, time_budget_s=args.entry_budget,
                                        spatial_dims=args.catalog_dims)))
        return
    if args.catalog:
        threads = torch.get_num_threads()
        dims_suffix = f"-{args.catalog_dims}d" if args.catalog_dims else ""
        measure_catalog(args.catalog_models, device=device, path=RESULTS / f"catalog-{device}{dims_suffix}.json",
                        force=args.force, progress=lambda line: print(f"catalog {line}", flush=True),
                        measure=lambda name: measure_in_child(name, device, threads, args.entry_budget,
                                                              args.entry_timeout, args.catalog_dims),
                        spatial_dims=args.catalog_dims)
    if args.no_sweep:
        return
    key = "cuda" if device == "cuda" else ("cpu-quick" if args.quick else "cpu")
    path = RESULTS / f"models-{device}.json"
    results = {int(k[0]): v for k, v in json.loads(path.read_text())["sweeps"].items()} \
        if path.is_file() else {}
    results.update(sweep(device, {d: SIZES[key][d] for d in args.dims}, repeats, warmup))
    out = {
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "cpu": machine_description("cpu"),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "quick": args.quick,
        "sweeps": {f"{d}d": r for d, r in sorted(results.items())},
        "goal": goal(device, repeats, warmup) if args.goal or device == "cuda" else goal("cpu", 0, 0),
        "seconds_last_run": round(time.time() - started, 1),
    }
    with atomic_file(path, suffix=".json") as tmp:
        report.write_json(tmp, out)
    plot(results, RESULTS / f"models-{device}.png")
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
