"""The model catalog: registry metadata plus what we measure, never typed in.

Parameters are counted live (cheap: the model is built on the ``meta`` device). FLOPs, latency and peak memory
at each entry's reference configuration are measured by ``benchmarks/models.py --catalog`` (which calls
:func:`measure_catalog`) and stored in ``benchmarks/results/catalog-<device>.json``; :func:`catalog_rows` merges
them when the file is there.
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
DETAIL_KEYS = ("flops", "flops_scan", "latency_ms", "peak_memory_mb", "memory_method", "device", "preset",
               "input_shape", "torch_threads")


def measurements_path(device: str = "cpu") -> Path:
    return RESULTS_DIR / f"catalog-{device}.json"


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


def measure_entry(name: str, device: str = "cpu", repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Profile one entry at its reference configuration with the evaluation harness's ``profile_model``."""
    from medmamba.evaluation.efficiency import profile_model

    cfg = reference_config(name)
    result = profile_model(build_reference_model(name), cfg["input_shape"], device=device, repeats=repeats,
                           warmup=warmup)
    import torch

    result["preset"] = cfg["preset"]
    result["torch_threads"] = torch.get_num_threads()
    return result


def measure_catalog(names: Iterable[str] | None = None, device: str = "cpu", path: Path | None = None,
                    progress: Callable[[str], None] | None = None, **profile_kwargs) -> dict[str, dict[str, Any]]:
    """Measure entries (all by default) and merge them into ``catalog-<device>.json`` (written atomically)."""
    path = Path(path) if path is not None else measurements_path(device)
    measured = load_measurements(path)
    for name in names if names is not None else list_models():
        if progress is not None:
            progress(name)
        measured[name] = measure_entry(name, device, **profile_kwargs)
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return measured


def load_measurements(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = Path(path) if path is not None else measurements_path("cpu")
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def catalog_rows(task: str | None = None, spatial_dims: int | None = None,
                 measurements: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One dict per registry entry: its metadata, ``params`` (live, at the reference configuration) and, when a
    measurement at the current reference configuration exists, ``flops``, ``latency_ms``, ``peak_memory_mb`` and
    the details under ``measured`` (stale measurements, taken at another preset or input, are left out)."""
    measurements = load_measurements() if measurements is None else measurements
    rows = []
    for name in list_models(task=task, spatial_dims=spatial_dims):
        row = model_entry(name).as_dict()
        cfg = reference_config(name)
        row["reference"] = {"preset": cfg["preset"], "input_shape": list(cfg["input_shape"])}
        row["params"] = count_params(name)
        measured = measurements.get(name)
        current = measured is not None and measured.get("preset") == cfg["preset"] and \
            list(measured.get("input_shape", ())) == list(cfg["input_shape"])
        row["measured"] = {k: measured[k] for k in DETAIL_KEYS if k in measured} if current else None
        if current:
            row.update({k: measured[k] for k in HEADLINE_KEYS})
        rows.append(row)
    return rows


def format_count(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"
