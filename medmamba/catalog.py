"""The model catalog: registry metadata plus what we measure, never typed in.

Parameters are counted live (cheap: the model is built on the ``meta`` device). FLOPs, latency and peak memory at
each entry's reference configuration are measured by ``benchmarks/models.py --catalog`` into
``catalog-<device>.json``; whether an entry is its paper's network by ``benchmarks/equivalence.py`` into
``equivalence.json`` (the official code's outputs against ours at the same weights, or why that was not run).
:func:`catalog_rows` merges both. They are read from :func:`results_dir`: the copy a regular install ships inside
the package (``medmamba/benchmark_results``, made by setup.py's ``build_py`` from ``benchmarks/results``), or, in
an editable install, the checkout's ``benchmarks/results`` itself. An entry whose forward pass could not run keeps
its FLOPs with ``latency_ms`` None and the reason in ``latency_note``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medmamba.registry import create_model, list_models, model_entry

PACKAGED_RESULTS = "benchmark_results"  # the folder, inside the installed package, setup.py copies results to
HEADLINE_KEYS = ("flops", "latency_ms", "peak_memory_mb")
DETAIL_KEYS = ("flops", "flops_scan", "latency_ms", "latency_repeats", "latency_note", "peak_memory_mb",
               "memory_method", "memory_note", "device", "preset", "input_shape", "torch_threads")


def results_dir() -> Path:
    """Where the catalog's measurements are read: the package's own copy (regular installs), else the checkout's
    ``benchmarks/results`` (editable installs)."""
    packaged = Path(__file__).resolve().parent / PACKAGED_RESULTS
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def measurements_path(device: str = "cpu") -> Path:
    """Path of the measurements file for ``device`` (``catalog-<device>.json`` in :func:`results_dir`)."""
    return results_dir() / f"catalog-{device}.json"


def equivalence_path() -> Path:
    """Path of the equivalence harness's record (``equivalence.json`` in :func:`results_dir`)."""
    return results_dir() / "equivalence.json"


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
    """Build a registered model at its reference configuration (see :func:`reference_config`).

    Args:
        name: the registered model name.
        spatial_dims: 2 or 3; the entry's first supported value when None.
        device: where the parameters are created; ``"meta"`` allocates no memory.

    Returns:
        The ``torch.nn.Module``, freshly initialised (not moved to eval mode).

    Raises:
        ValueError: the entry has no reference input for ``spatial_dims``.
    """
    cfg = reference_config(name, spatial_dims)
    import torch

    with torch.device(device):
        return create_model(name, spatial_dims=cfg["spatial_dims"], in_channels=cfg["in_channels"],
                            preset=cfg["preset"])


def count_params(name: str) -> int:
    """Parameters at the reference configuration, built on the meta device (no memory, no init cost)."""
    return sum(p.numel() for p in build_reference_model(name, device="meta").parameters())


def is_current(name: str, measured: dict[str, Any] | None, spatial_dims: int | None = None) -> bool:
    """A stored measurement taken at the entry's current reference configuration (preset and input)."""
    cfg = reference_config(name, spatial_dims)
    return measured is not None and measured.get("preset") == cfg["preset"] and \
        list(measured.get("input_shape", ())) == list(cfg["input_shape"])


def load_measurements(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The stored measurements per entry name (empty when the file does not exist).

    Args:
        path: a ``catalog-<device>.json``; the CPU one in :func:`results_dir` when None.

    Returns:
        ``{model name: {"flops": ..., "latency_ms": ..., ...}}`` as ``benchmarks/models.py --catalog`` wrote it.
    """
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
    """A count with a decimal SI suffix and two decimals, e.g. ``format_count(2.5e9, "FLOPs") == "2.50GFLOPs"``.

    Args:
        value: the number; None or NaN gives ``"-"``. Values under 1000 are printed as they are (``:g``).
        unit: appended after the suffix.

    Returns:
        The formatted string.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"
