"""The model catalog: registry metadata plus what we measure, never typed in.

Parameters are counted live (cheap: the model is built on the ``meta`` device). FLOPs (counted on the meta
device), latency and peak memory at each entry's reference configuration are measured by
``benchmarks/models.py --catalog`` (which calls :func:`measure_catalog`) and stored in
``benchmarks/results/catalog-<device>.json``; :func:`catalog_rows` merges them when the file is there. An entry
whose forward pass cannot run here keeps its FLOPs with ``latency_ms`` None and the reason in ``latency_note``.

Whether an entry is its paper's network is read from ``benchmarks/results/equivalence.json``, written by
``benchmarks/equivalence.py``: the official code's outputs against ours at the same weights, or why that was not
run (:func:`equivalence_text`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from medmamba.io_utils import atomic_file
from medmamba.registry import create_model, list_models, model_entry

RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
HEADLINE_KEYS = ("flops", "latency_ms", "peak_memory_mb")
DETAIL_KEYS = ("flops", "flops_scan", "latency_ms", "latency_repeats", "latency_note", "peak_memory_mb",
               "memory_method", "memory_note", "device", "preset", "input_shape", "torch_threads")


def measurements_path(device: str = "cpu") -> Path:
    return RESULTS_DIR / f"catalog-{device}.json"


def equivalence_path() -> Path:
    return RESULTS_DIR / "equivalence.json"


def load_equivalence(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The harness's record per entry (empty when it has not been run)."""
    path = Path(path) if path is not None else equivalence_path()
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def equivalence_text(record: dict[str, Any] | None) -> str:
    """One line: "matches official code (repo@commit, max rel. diff ...)", how it differs, or why not checked."""
    if record is None:
        return "not compared with the official code yet"
    where = f"{record['repository']}@{record['commit'][:7]}" if record.get("commit") else record["repository"]
    if record["verdict"] == "not run":
        return f"not compared with the official code ({where}): {record['reason']}"
    diff = f"max rel. diff {record['max_rel_diff']:.1e}"
    if record["verdict"] == "match":
        return f"matches official code ({where}, {diff})"
    return f"differs from official code ({where}, {diff} > {record['tolerance']:.0e})"


def reference_config(name: str, spatial_dims: int | None = None) -> dict[str, Any]:
    """How an entry is measured: its ``paper`` preset when it has one, at its reference input (batch 1)."""
    entry = model_entry(name)
    dims = spatial_dims if spatial_dims is not None else entry.spatial_dims[0]
    shape = entry.reference_input.get(dims)
    if shape is None:
        raise ValueError(f"model {name!r} has no reference_input for spatial_dims={dims}")
    return {
        "spatial_dims": dims,
        "preset": "paper" if "paper" in entry.presets else None,
        "in_channels": shape[0],
        "input_shape": (1, *shape),
    }


def build_reference_model(name: str, spatial_dims: int | None = None, device: str = "cpu"):
    cfg = reference_config(name, spatial_dims)
    import torch

    with torch.device(device):
        return create_model(name, spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"],
                            preset=cfg["preset"])


def count_params(name: str) -> int:
    """Parameters at the reference configuration, built on the meta device (no memory, no init cost)."""
    return sum(p.numel() for p in build_reference_model(name, device="meta").parameters())


def reference_flops(name: str) -> dict[str, int]:
    """``params``, ``flops``, ``flops_scan`` and ``scan_calls`` of one forward pass at the reference configuration,
    counted on the meta device: no memory, no arithmetic, so even inputs too big to run here are counted."""
    import torch

    from medmamba.evaluation.efficiency import count_flops, count_parameters

    model = build_reference_model(name, device="meta").eval()
    x = torch.empty(reference_config(name)["input_shape"], device="meta")
    return {"params": count_parameters(model), **count_flops(model, x)}


def measure_passes(name: str, device: str = "cpu", repeats: int = 3,
                   time_budget_s: float = 300.0) -> dict[str, Any]:
    """Latency and peak memory of real forward passes at the reference configuration.

    The first pass is timed; a warm-up and up to ``repeats`` timed passes follow only while they fit in
    ``time_budget_s``, and so does the peak-memory pass (``peak_memory_mb`` is None otherwise, with the reason
    in ``memory_note``). ``latency_repeats`` / ``latency_warmup`` say what the median was taken over.
    """
    import statistics
    import time

    import torch

    from medmamba.evaluation.efficiency import measure_latency, measure_peak_memory

    cfg = reference_config(name)
    started = time.perf_counter()
    model = build_reference_model(name, device=device).eval()
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
                  passes: dict[str, Any] | None = None, **pass_kwargs) -> dict[str, Any]:
    """One catalog record: ``counts`` (default :func:`reference_flops`) and ``passes`` (default
    :func:`measure_passes`; give a dict with ``latency_ms`` None and a ``latency_note`` for an entry that could
    not run), with the configuration they were taken at."""
    import torch

    cfg = reference_config(name)
    counts = reference_flops(name) if counts is None else counts
    passes = measure_passes(name, device, **pass_kwargs) if passes is None else passes
    return {**counts, **passes, "device": device, "preset": cfg["preset"], "input_shape": list(cfg["input_shape"]),
            "torch_threads": torch.get_num_threads(), "dtype": "float32"}


def is_current(name: str, measured: dict[str, Any] | None) -> bool:
    """A stored measurement taken at the entry's current reference configuration (preset and input)."""
    cfg = reference_config(name)
    return measured is not None and measured.get("preset") == cfg["preset"] and \
        list(measured.get("input_shape", ())) == list(cfg["input_shape"])


def measure_catalog(names: Iterable[str] | None = None, device: str = "cpu", path: Path | None = None,
                    progress: Callable[[str], None] | None = None, force: bool = False,
                    measure: Callable[[str], dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Measure entries (all by default) with ``measure`` (default :func:`measure_entry`) and merge each into
    ``catalog-<device>.json`` as soon as it is done (written atomically), so an interrupted run resumes: entries
    already measured at their current reference configuration are skipped unless ``force``."""
    path = Path(path) if path is not None else measurements_path(device)
    measure = measure if measure is not None else (lambda name: measure_entry(name, device))
    measured = load_measurements(path)
    todo = list(names if names is not None else list_models())
    for i, name in enumerate(todo):
        if not force and is_current(name, measured.get(name)) and measured[name].get("device") == device:
            if progress is not None:
                progress(f"[{i + 1}/{len(todo)}] {name}: already measured, skipped")
            continue
        if progress is not None:
            progress(f"[{i + 1}/{len(todo)}] {name}: measuring")
        measured[name] = measure(name)
        with atomic_file(path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return measured


def load_measurements(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = Path(path) if path is not None else measurements_path("cpu")
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def catalog_rows(task: str | None = None, spatial_dims: int | None = None,
                 measurements: dict[str, dict[str, Any]] | None = None,
                 equivalence: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One dict per registry entry: its metadata, ``params`` (live, at the reference configuration) and, when a
    measurement at the current reference configuration exists, ``flops``, ``latency_ms``, ``peak_memory_mb`` and
    the details under ``measured`` (stale measurements, taken at another preset or input, are left out);
    ``official_code``: the equivalence harness's verdict line (:func:`equivalence_text`), ``equivalence`` its
    record without the per-case details."""
    measurements = load_measurements() if measurements is None else measurements
    equivalence = load_equivalence() if equivalence is None else equivalence
    rows = []
    for name in list_models(task=task, spatial_dims=spatial_dims):
        row = model_entry(name).as_dict()
        cfg = reference_config(name)
        row["reference"] = {"preset": cfg["preset"], "input_shape": list(cfg["input_shape"])}
        row["params"] = count_params(name)
        measured = measurements.get(name)
        current = is_current(name, measured)
        row["measured"] = {k: measured[k] for k in DETAIL_KEYS if k in measured} if current else None
        if current:
            row.update({k: measured.get(k) for k in HEADLINE_KEYS})
        record = equivalence.get(name)
        row["official_code"] = equivalence_text(record)
        row["equivalence"] = None if record is None else {k: v for k, v in record.items() if k != "cases"}
        rows.append(row)
    return rows


def format_count(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"
