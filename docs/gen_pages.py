"""Generate the catalog pages from the model registry at build time (mkdocs-gen-files)."""
from __future__ import annotations

import html
import importlib
import inspect
from pathlib import Path

import mkdocs_gen_files

import medmamba
from medmamba.catalog import catalog_rows, format_count
from medmamba.registry import model_entry
from medmamba.weights import FORKED_TRAINERS

TASKS = ("segmentation", "classification", "restoration")


def dims_text(entry) -> str:
    return ", ".join(f"{d}D" for d in entry.spatial_dims)


def headline(entry) -> str:
    if not entry.reported:
        return "—"
    r = entry.reported[0]
    return f"{r.metric} {r.value:g} ({r.dataset})"


def block_svg(entry) -> str:
    """A box per top-level submodule of the small default network, in forward order, with its parameters."""
    net = medmamba.create_model(entry.name, spatial_dims=entry.spatial_dims[0])
    children = list(net.named_children())
    box_w, box_h, gap = 220, 46, 18
    height = len(children) * (box_h + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{box_w + 40}" height="{height}" '
             f'font-family="sans-serif" font-size="12">']
    for i, (name, module) in enumerate(children):
        y = gap + i * (box_h + gap)
        n = sum(p.numel() for p in module.parameters())
        parts.append(f'<rect x="20" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#e0f2f1" stroke="#00796b"/>')
        parts.append(f'<text x="30" y="{y + 19}" font-weight="bold">{html.escape(name)}</text>')
        parts.append(f'<text x="30" y="{y + 36}">{html.escape(type(module).__name__)} · {n:,} params</text>')
        if i:
            parts.append(f'<line x1="130" y1="{y - gap}" x2="130" y2="{y}" stroke="#00796b" marker-end="url(#a)"/>')
    parts.insert(1, '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="4" refY="4" orient="auto">'
                    '<path d="M0,0 L8,4 L0,8 z" fill="#00796b"/></marker></defs>')
    parts.append("</svg>")
    return "\n".join(parts)


def latency_text(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1e3:.1f} s" if ms >= 1e3 else f"{ms:.0f} ms"


def official_code_cell(record) -> str:
    if record is None:
        return "—"
    if record["verdict"] == "not run":
        return "not run"
    return f"{record['verdict']} ({record['max_rel_diff']:.0e})"


def equivalence_lines(e, row) -> list[str]:
    """The entry's comparison with its official code, per configuration."""
    from medmamba.catalog import load_equivalence

    lines = ["", "## Official code", "", row["official_code"] + "."]
    cases = (load_equivalence().get(e.name) or {}).get("cases", [])
    if cases:
        lines += ["", "| Configuration | Input | Outputs compared | Max rel. diff | Verdict |",
                  "|---|---|---|---|---|"]
    for case in cases:
        diff = f"{case['max_rel_diff']:.1e}" if "max_rel_diff" in case else case.get("reason", "—")
        lines.append(f"| {case['name']} | {tuple(case['input_shape'])} | {len(case.get('outputs', []))} | "
                     f"{diff} | {case['verdict']} |")
    if e.checkpoint_filter is not None:
        forked = e.trainer in FORKED_TRAINERS.values()
        lines += ["", f"Official checkpoints: `medmamba import-weights {e.name} CHECKPOINT -o {e.name}.safetensors`"
                  + ("; results of its forked nnU-Net: `medmamba import-nnunet`" if forked else "")
                  + " (see [Official weights and equivalence](../../official.md))."]
    return lines


def index_page(entries, rows_by_name) -> str:
    rows = []
    for e in entries:
        measured = rows_by_name[e.name]
        rows.append(
            f'<tr data-task="{e.task}" data-dims="{" ".join(map(str, e.spatial_dims))}">'
            f'<td><a href="{e.name}/">{e.name}</a></td><td>{e.task}</td><td>{dims_text(e)}</td>'
            f"<td>{html.escape(e.family)}</td><td>{html.escape(e.scan)}</td>"
            f"<td>{format_count(measured['params'])}</td><td>{format_count(measured.get('flops'))}</td>"
            f"<td>{latency_text(measured.get('latency_ms'))}</td>"
            f"<td>{html.escape(official_code_cell(measured['equivalence']))}</td>"
            f"<td>{html.escape(headline(e))}</td></tr>"
        )
    task_opts = "".join(f'<option value="{t}">{t}</option>' for t in TASKS)
    return f"""# Model catalog

Every network in medmamba's registry, generated from `medmamba.list_models()` at build time.
Parameters are counted by code at each entry's reference configuration (its `paper` preset when it has one);
FLOPs (selective scans included, counted on the meta device), CPU latency (batch 1, median; "—" where the
forward pass could not run on the CPU, with the reason on the entry's page) come from
`benchmarks/models.py --catalog` at the reference input. "Official code": whether our network gives the official
code's outputs at the same weights (max relative difference, a match within 1e-4; `benchmarks/equivalence.py`,
see [Official weights and equivalence](../official.md)), or why it was not compared.

<div class="catalog-filters">
<label>Task <select id="filter-task"><option value="">all</option>{task_opts}</select></label>
<label>Dims <select id="filter-dims"><option value="">all</option><option value="2">2D</option>
<option value="3">3D</option></select></label>
<span id="catalog-count"></span>
</div>

<table id="catalog-table">
<thead><tr><th>Model</th><th>Task</th><th>Dims</th><th>Family</th><th>Scan</th><th>Parameters</th><th>FLOPs</th>
<th>CPU latency</th><th>Official code</th><th>Paper's headline result</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
"""


def entry_page(e, row) -> str:
    p = e.paper
    lines = [
        f"# {e.name}",
        "",
        f"**{p.title}** — {p.venue} {p.year}, [arXiv:{p.arxiv}](https://arxiv.org/abs/{p.arxiv}) · "
        f"[official code]({e.code_url})",
        "",
        "| | |",
        "|---|---|",
        f"| Task | {e.task} |",
        f"| Spatial dims | {dims_text(e)} |",
        f"| Family | {e.family} |",
        f"| Scan strategy | {e.scan} |",
        f"| Presets | {', '.join(sorted(e.presets)) or '—'} |",
        f"| nnU-Net trainer | {f'`{e.trainer}`' if e.trainer else '—'} |",
    ]
    if e.notes:
        lines += ["", f"!!! note\n    {e.notes}"]
    lines += ["", "## Paper's results and our measurements", "", "| Source | Dataset | Metric | Value |",
              "|---|---|---|---|"]
    lines += [f"| paper | {r.dataset} | {r.metric} | {r.value:g} |" for r in e.reported]
    if e.paper_params_m is not None:
        lines.append(f"| {e.params_source} | — | parameters | {e.paper_params_m:g} M |")
    ref = row["reference"]
    where = f"input {tuple(ref['input_shape'])}"
    if ref["preset"]:
        where = f"preset `{ref['preset']}`, {where}"
    lines.append(f"| medmamba ({where}) | — | parameters | {format_count(row['params'])} |")
    if row["measured"]:
        m = row["measured"]
        lines.append(f"| medmamba ({where}) | — | FLOPs | {format_count(m['flops'])} |")
        machine = f"{where}, {m['device']}, {m.get('torch_threads', '?')} threads"
        latency = f"{m['latency_ms']:.1f} ms" if m["latency_ms"] is not None else m["latency_note"]
        if m["latency_ms"] is not None and m.get("latency_repeats"):
            latency += f" (median of {m['latency_repeats']})"
        lines.append(f"| medmamba ({machine}) | — | latency | {latency} |")
        memory = f"{m['peak_memory_mb']:.0f} MB" if m.get("peak_memory_mb") is not None else \
            m.get("memory_note") or "not measured"
        lines.append(f"| medmamba ({machine}) | — | peak memory (forward) | {memory} |")
    lines += equivalence_lines(e, row)
    lines += ["", "## Use it", "", "```python", "import medmamba", "",
              f'net = medmamba.create_model("{e.name}", spatial_dims={e.spatial_dims[-1]}, in_channels=1, '
              f'{"out_channels=1" if e.task == "restoration" else "num_classes=3"})', "```"]
    if e.trainer:
        lines += ["", "```bash", f"nnUNetv2_train DATASET 3d_fullres 0 -tr {e.trainer}", "```"]
    lines += ["", "## Block structure", "", f"![{e.name} top-level modules]({e.name}.svg)", "",
              "Top-level modules of the default configuration, in order, with their parameter counts.", "",
              "## Builder", "", "```python", inspect.getsource(e.builder).strip(), "```"]
    return "\n".join(lines) + "\n"


entries = [model_entry(n) for n in medmamba.list_models()]
rows = {row["name"]: row for row in catalog_rows()}
with mkdocs_gen_files.open("catalog/index.md", "w") as f:
    f.write(index_page(entries, rows))
for e in entries:
    with mkdocs_gen_files.open(f"catalog/{e.name}/index.md", "w") as f:
        f.write(entry_page(e, rows[e.name]))
    with mkdocs_gen_files.open(f"catalog/{e.name}/{e.name}.svg", "w") as f:
        f.write(block_svg(e))

# Packages mapped from top-level folders (setup.py package_dir) are invisible to static analysis:
# document their public functions and classes by introspection.
MAPPED_PACKAGES = ("medmamba.kernels", "medmamba.datasets", "medmamba.evaluation")


def public_members(module):
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(module.__name__):
            yield name, obj


with mkdocs_gen_files.open("api-mapped.md", "w") as f:
    f.write("# API reference: kernels, datasets, evaluation\n")
    for package in MAPPED_PACKAGES:
        module = importlib.import_module(package)
        f.write(f"\n## `{package}`\n\n{inspect.getdoc(module) or ''}\n")
        for name, obj in public_members(module):
            try:
                sig = str(inspect.signature(obj))
            except (TypeError, ValueError):
                sig = "(...)"
            f.write(f"\n### `{name}`\n\n```python\n{name}{sig}\n```\n\n{inspect.getdoc(obj) or ''}\n")

# Benchmark results: every JSON under benchmarks/results with its plot, copied into the site.
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
with mkdocs_gen_files.open("benchmarks.md", "w") as f:
    f.write("# Benchmarks\n\nMeasured by the scripts in `benchmarks/`, as ratios against a baseline measured in the "
            "same run. Each result file is linked as it was written; re-run a script to refresh it.\n")
    for result in sorted(RESULTS.glob("*.json")):
        f.write(f"\n## {result.stem}\n\n[{result.name}](results/{result.name})\n")
        with mkdocs_gen_files.open(f"results/{result.name}", "wb") as out:
            out.write(result.read_bytes())
        for plot in sorted(RESULTS.glob(f"{result.stem}*.png")):
            with mkdocs_gen_files.open(f"results/{plot.name}", "wb") as out:
                out.write(plot.read_bytes())
            f.write(f"\n![{plot.stem}](results/{plot.name})\n")
