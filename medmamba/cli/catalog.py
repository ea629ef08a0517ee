"""``medmamba catalog``: the model registry as a table, or as JSON with ``--json``."""
from __future__ import annotations

import argparse

from medmamba.registry import TASKS


def _run(args) -> int:
    import json

    from medmamba.catalog import catalog_rows, format_count
    from medmamba.errors import MedMambaError

    try:
        rows = catalog_rows(task=args.task, spatial_dims=args.dims)
    except json.JSONDecodeError as err:
        raise MedMambaError(f"benchmarks/results/catalog-cpu.json: not valid JSON ({err})") from None
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = ("name", "task", "dims", "family", "scan", "paper", "params", "paper params", "FLOPs", "CPU ms",
              "official code")
    table = [header]
    for r in rows:
        paper = r["paper"]
        table.append((
            r["name"], r["task"], "/".join(f"{d}D" for d in r["spatial_dims"]), r["family"],
            r["scan"] if len(r["scan"]) <= 40 else r["scan"][:39] + "…",
            f"{paper['venue']} {paper['year']} (arXiv {paper['arxiv']})",
            format_count(r["params"]),
            "-" if r["paper_params_m"] is None
            else f"{r['paper_params_m']:.2f}M" + ("" if r["params_source"] == "paper" else " (code)"),
            format_count(r.get("flops")),
            "-" if r.get("latency_ms") is None else f"{r['latency_ms']:.0f}",
            _official_code(r["equivalence"]),
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(rows)} models. params: ours at the reference configuration ('paper' preset where there is one); "
          "paper params marked (code): counted from the official code where the paper states none; "
          "FLOPs (2 per multiply-add, scans included) and CPU latency: batch 1 at the reference input, measured by "
          "`python benchmarks/models.py --catalog`. official code: our outputs against the official code's at the "
          "same weights (`python benchmarks/equivalence.py`; max relative difference, 'match' within 1e-4), "
          "detailed with --json.")
    return 0


def _official_code(record) -> str:
    if record is None:
        return "-"
    if record["verdict"] == "not run":
        return "not run"
    return f"{record['verdict']} {record['max_rel_diff']:.0e}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("catalog", help="list the registered models with their metadata",
                                   description="List the registered models: task, dims, family, scan strategy, "
                                   "paper, our parameter count and, when measured, FLOPs and CPU latency.")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    parser.add_argument("--task", choices=TASKS, help="only models for this task")
    parser.add_argument("--dims", type=int, choices=(2, 3), help="only models supporting these spatial dims")
    parser.set_defaults(func=_run)
