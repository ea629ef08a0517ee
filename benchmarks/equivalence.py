"""Proof that a catalog entry is its paper's network: the official model, built from a checkout of its public
repository on medmamba's ``mamba_ssm`` shim, and ours, given the same random weights through
``medmamba.import_weights``, compared output for output on the same input (float32, CPU, eval mode).

    python benchmarks/equivalence.py --entry umamba_bot --official PATH/TO/U-Mamba
    python benchmarks/equivalence.py --all --official-root PATH/TO/CHECKOUTS    # each at ROOT/<owner>+<name>
    python benchmarks/equivalence.py --entry umamba_bot --official PATH --write-key-fixture

Each entry's recipe (``benchmarks/official/<entry>.py``) names its cases: the paper's configuration and, for
networks built from nnU-Net plans, our trainer against the official builder on a 2d and a 3d_fullres plan. Per
case: the shim is installed (``install_mamba_ssm(force=True)``), the official model is built (seeded), every
floating-point parameter and buffer gets noise on top of its initialisation (so zero- or one-initialised biases,
norms and D count; log decay rates stay near theirs), its state dict is saved to a ``.pth`` and imported with
``medmamba.import_weights`` into ours, which loads it strictly; both run on the same seeded input. Reported per
output (deep-supervision outputs included): max |ours - official| and that divided by max |official|. An entry
``match``es when every case's relative difference is <= 1e-4; a case whose official code cannot run is
``not run`` with the reason.

Writes (merges into) benchmarks/results/equivalence.json, one record per entry with the repository's commit
(``git -C DIR rev-parse HEAD``). ``--write-key-fixture`` instead writes tests/data/official_keys/<entry>.json:
the official key names and shapes (and which names hold one tensor) of the recipe's small cases, with what our
side is built from, so that the tests check each checkpoint filter without the official code.

The official code's own dependencies (timm, einops, ...) are not medmamba's: ``pip install timm einops``.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from official import Case, Recipe, as_outputs, build_ours, describe, load_recipe, recipe_names

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "equivalence.json"
FIXTURES = ROOT / "tests" / "data" / "official_keys"
TOLERANCE = 1e-4
SEED = 0
_LOG_DECAY = re.compile(r"(^|\.)A(_\w+)?_logs?$")  # A_log, A_b_log, A_logs: A = -exp(A_log)


def randomize_(model: nn.Module, seed: int = SEED) -> None:
    """Noise on every floating-point parameter and buffer (each tensor once, however many names it has):
    0.2 x its standard deviation (0.2 where it is constant), 0.1 on log decay rates."""
    generator = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            if _LOG_DECAY.search(name):
                tensor.add_(0.1 * noise)
            else:
                spread = tensor.std().item() if tensor.numel() > 1 else 0.0
                tensor.add_(0.2 * (spread if spread > 0 else 1.0) * noise)


def git_commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                          encoding="utf-8", errors="replace",
                          check=True).stdout.strip()


def differences(official: list[torch.Tensor], ours: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per output: max |ours - official| and that over max |official|."""
    rows = []
    for a, b in zip(official, ours):
        max_abs = (b.double() - a.double()).abs().max().item()
        rows.append({"shape": list(a.shape), "max_abs_diff": max_abs,
                     "max_rel_diff": max_abs / max(a.double().abs().max().item(), 1e-30)})
    return rows


def compare(entry: str, case: Case, seed: int = SEED) -> dict[str, Any]:
    """Build both models, carry the official weights over with ``import_weights``, compare the outputs."""
    from medmamba import import_weights

    record: dict[str, Any] = {"name": case.name, "configuration": describe(case.ours),
                              "input_shape": list(case.input_shape)}
    started = time.perf_counter()
    torch.manual_seed(seed)
    try:
        official = case.build_official().float().eval()
    except Exception as err:  # noqa: BLE001 - any failure of the official code is recorded, not raised
        return {**record, "verdict": "not run", "reason": f"official code: {type(err).__name__}: {err}"}
    randomize_(official, seed)
    ours = build_ours(entry, case.ours).float().eval()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "official.pth"
        torch.save(official.state_dict(), checkpoint)
        report = import_weights(entry, checkpoint, model=ours)
    coverage = report.as_dict()
    coverage.pop("source")
    record["coverage"] = coverage
    if not report.complete:
        return {**record, "verdict": "differs", "reason": "import incomplete:\n" + report.summary()}
    ours.load_state_dict(report.state_dict, strict=True)
    x = torch.randn(case.input_shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        theirs = case.official_outputs(official(x.clone()))
        mine = as_outputs(ours(x.clone()))
    if len(theirs) != len(mine) or any(a.shape != b.shape for a, b in zip(theirs, mine)):
        shapes = [tuple(t.shape) for t in theirs], [tuple(t.shape) for t in mine]
        return {**record, "verdict": "differs", "reason": f"output shapes: official {shapes[0]}, ours {shapes[1]}"}
    outputs = differences(theirs, mine)
    worst = max(o["max_rel_diff"] for o in outputs)
    return {**record, "outputs": outputs, "max_rel_diff": worst, "seconds": round(time.perf_counter() - started, 1),
            "verdict": "match" if worst <= TOLERANCE else "differs"}


def entry_record(recipe: Recipe, checkout: Path | None, progress=print) -> dict[str, Any]:
    """Every case of one entry, and the entry's verdict: ``differs`` if any case differs, else ``not run`` if any
    could not run, else ``match``."""
    record: dict[str, Any] = {"entry": recipe.entry, "repository": recipe.repo}
    if recipe.not_runnable is not None:
        return {**record, "verdict": "not run", "reason": recipe.not_runnable}
    from medmamba.compat import install_mamba_ssm

    install_mamba_ssm(force=True)
    record["commit"] = git_commit(checkout)
    cases = []
    for case in recipe.cases(checkout):
        progress(f"{recipe.entry}: {case.name} ...")
        cases.append(compare(recipe.entry, case))
        progress(f"{recipe.entry}: {case.name}: {cases[-1]['verdict']}"
                 + (f", max rel. diff {cases[-1]['max_rel_diff']:.2e}" if "max_rel_diff" in cases[-1] else "")
                 + (f" ({cases[-1]['reason']})" if "reason" in cases[-1] else ""))
    verdicts = {c["verdict"] for c in cases}
    verdict = next(v for v in ("differs", "not run", "match") if v in verdicts)
    ran = [c["max_rel_diff"] for c in cases if "max_rel_diff" in c]
    record.update(verdict=verdict, max_rel_diff=max(ran) if ran else None, tolerance=TOLERANCE, cases=cases,
                  environment={"torch": torch.__version__, "mamba_ssm": "medmamba.compat shim", "device": "cpu",
                               "dtype": "float32", "threads": torch.get_num_threads()})
    if verdict == "not run":
        record["reason"] = next(c["reason"] for c in cases if c["verdict"] == "not run")
    return record


def to_json(value: Any, sort_keys: bool = False) -> str:
    """Indented JSON with lists of numbers (shapes, strides) on one line."""
    text = json.dumps(value, indent=1, sort_keys=sort_keys)
    return re.sub(r"\[[\d\s,.eE+-]*\]", lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


def official_keys(model: nn.Module) -> tuple[dict[str, list[int]], list[list[str]]]:
    """A model's state-dict names with their shapes, and the groups of names that hold one tensor."""
    state = model.state_dict()
    groups: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        groups.setdefault((tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride()),
                          []).append(name)
    return {k: list(v.shape) for k, v in state.items()}, [g for g in groups.values() if len(g) > 1]


def write_key_fixture(recipe: Recipe, checkout: Path, path: Path | None = None) -> Path:
    from medmamba.compat import install_mamba_ssm
    from medmamba.io_utils import atomic_file

    install_mamba_ssm(force=True)
    cases = {}
    for case in recipe.cases(checkout):
        if case.key_fixture:
            torch.manual_seed(SEED)
            keys, aliases = official_keys(case.build_official())
            cases[case.name] = {"ours": case.ours, "keys": keys, "aliases": aliases}
    if not cases:
        raise SystemExit(f"{recipe.entry}: its recipe marks no case for the key fixture")
    path = path or FIXTURES / f"{recipe.entry}.json"
    fixture = {"entry": recipe.entry, "repository": recipe.repo, "commit": git_commit(checkout), "cases": cases}
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(to_json(fixture), encoding="utf-8")
    return path


def merge_results(records: list[dict[str, Any]], path: Path = RESULTS) -> None:
    from medmamba.io_utils import atomic_file

    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    results.update({r["entry"]: r for r in records})
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(to_json(results, sort_keys=True), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--entry", choices=recipe_names(), help="one entry (with --official)")
    which.add_argument("--all", action="store_true", help="every entry with a recipe (with --official-root)")
    parser.add_argument("--official", type=Path, help="a checkout of the entry's official repository")
    parser.add_argument("--official-root", type=Path, help="a folder of checkouts named <owner>+<name>")
    parser.add_argument("--write-key-fixture", action="store_true",
                        help="write tests/data/official_keys/<entry>.json instead of comparing")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to merge into")
    args = parser.parse_args(argv)
    if args.entry and args.official is None:
        parser.error("--entry needs --official DIR")
    if args.all and args.official_root is None:
        parser.error("--all needs --official-root DIR")
    jobs = []
    for name in [args.entry] if args.entry else recipe_names():
        recipe = load_recipe(name)
        checkout = args.official if args.entry else args.official_root / recipe.folder
        if recipe.not_runnable is None and not (checkout / ".git").exists():
            print(f"{name}: skipped: no git checkout of {recipe.repo} at {checkout}", file=sys.stderr)
            continue
        jobs.append((recipe, checkout))
    if args.write_key_fixture:
        for recipe, checkout in jobs:
            if recipe.not_runnable is None:
                print(f"{recipe.entry}: wrote {write_key_fixture(recipe, checkout)}")
        return 0
    records = []
    for recipe, checkout in jobs:
        record = entry_record(recipe, checkout)
        record["command"] = " ".join(["python benchmarks/equivalence.py", "--entry", recipe.entry, "--official",
                                      shlex.quote(f"<{recipe.folder}>")])
        records.append(record)
        merge_results([record], args.results)
        print(f"{recipe.entry}: {record['verdict']}"
              + (f", max rel. diff {record['max_rel_diff']:.2e}" if record.get("max_rel_diff") is not None else ""))
    return 0 if all(r["verdict"] != "differs" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
