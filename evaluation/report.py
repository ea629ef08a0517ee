"""Shared output of the evaluation harness: summaries, metrics.json / metrics.csv / report.md and box plots.

Undefined values are NaN in memory, ``null`` in JSON, ``nan`` in CSV and ``n/a`` in Markdown; summaries are over
the finite values only and say how many were left out (``n_nan``).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """mean, std (population, as numpy), median and count of the finite values; ``n_nan`` counts the others."""
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "n": 0, "n_nan": int(array.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "n_nan": int(array.size - finite.size),
    }


def json_safe(obj: Any) -> Any:
    """Plain JSON types; NaN and infinities become None (``null``)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON through :func:`json_safe` (NaN and infinities as ``null``)."""
    path.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else repr(float(value))
    return str(value)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` under the header ``columns``: floats at full precision (``repr``), non-finite ones as
    ``nan``, missing keys empty."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c, "")) for c in columns])


def fmt(value: Any, digits: int = 4) -> str:
    """A Markdown cell: floats to ``digits`` significant digits, None and non-finite values as ``n/a``."""
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: ``header``, then one line per row with cells formatted by :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(summary: dict[str, dict[str, dict[str, Any]]], metrics: Sequence[str], group: str) -> str:
    """Markdown: a row per group, a column per metric, cells "mean ± std (median m, n finite / n_nan NaN)"."""

    def cell(s: dict[str, Any]) -> str:
        if not s["n"]:
            return f"n/a ({s['n_nan']} NaN)"
        nan = f", {s['n_nan']} NaN" if s["n_nan"] else ""
        return f"{fmt(s['mean'])} ± {fmt(s['std'])} (median {fmt(s['median'])}, n={s['n']}{nan})"

    lines = ["| " + " | ".join([group, *metrics]) + " |", "|" + "---|" * (len(metrics) + 1)]
    lines += ["| " + " | ".join([name, *(cell(per_metric[m]) for m in metrics)]) + " |"
              for name, per_metric in summary.items()]
    return "\n".join(lines)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def box_plots(out_dir: Path, cases: Sequence[dict[str, Any]], metrics: Sequence[str], group_key: str | None,
              groups: Sequence[str], prefix: str = "boxplot") -> list[str]:
    """One PNG per metric with a box per group (finite values only; ``group_key=None``: one box, all cases)."""
    plt = pyplot()
    names = []
    for metric in metrics:
        data = [[c[metric] for c in cases if (group_key is None or c[group_key] == g)
                 and c[metric] is not None and math.isfinite(c[metric])] for g in groups]
        fig, ax = plt.subplots(figsize=(max(3.0, 1.2 * len(groups) + 1.5), 3.5))
        ax.boxplot([d if d else [math.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(groups) + 1), [f"{g}\n(n={len(d)})" for g, d in zip(groups, data)])
        ax.set_ylabel(metric)
        ax.set_title(metric)
        fig.tight_layout()
        name = f"{prefix}_{metric}.png"
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def write_outputs(out_dir: Path, result: dict[str, Any], columns: Sequence[str], report_md: str) -> None:
    """metrics.json (``result``), metrics.csv (``result["cases"]`` with ``columns``) and report.md."""
    write_json(out_dir / "metrics.json", result)
    write_csv(out_dir / "metrics.csv", result["cases"], columns)
    (out_dir / "report.md").write_text(report_md, encoding="utf-8")
