"""A regular (non-editable) install: the wheel carries every package under medmamba.*, the nnU-Net discovery .pth,
and the catalog's measurements, which `medmamba catalog` then reads from inside the package."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_packages_discovery_and_catalog_results(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("medmamba-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("kernels", "datasets", "evaluation", "nnunet_plugins", "networks", "compat"):
        assert f"medmamba/{package}/__init__.py" in names, package
    assert "medmamba-nnunet.pth" in names
    assert not any(n.split("/")[0] in ("kernels", "datasets", "evaluation", "nnunet_plugins") for n in names)
    for result in ("catalog-cpu.json", "equivalence.json"):
        assert f"medmamba/benchmark_results/{result}" in names

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import medmamba.catalog as c; "
              "rows = c.catalog_rows(); print(json.dumps([str(c.results_dir()), c.__file__, "
              "{r['name']: [r.get('flops'), r['official_code']] for r in rows}]))")
    done = subprocess.run([sys.executable, "-c", script, str(unpacked)], capture_output=True,
                          encoding="utf-8", errors="replace", check=True,
                          cwd=tmp_path, timeout=300)
    results_dir, module, rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(unpacked) and Path(results_dir) == unpacked / "medmamba" / "benchmark_results"
    measured = json.loads((ROOT / "benchmarks" / "results" / "catalog-cpu.json").read_text(encoding="utf-8"))
    equivalence = json.loads((ROOT / "benchmarks" / "results" / "equivalence.json").read_text(encoding="utf-8"))
    for name, (flops, official) in rows.items():
        if name in measured:
            assert flops == measured[name]["flops"], name
        if equivalence.get(name, {}).get("verdict") == "match":
            assert official.startswith("matches official code"), (name, official)
