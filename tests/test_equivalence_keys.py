"""Every checkpoint filter on a state dict with its official repository's key names and layout
(tests/data/official_keys/<entry>.json, written by ``benchmarks/equivalence.py --write-key-fixture`` from the
official code): every one of ours loads, and each holds exactly the values of the official tensors it names as
its sources. CI has no copy of the official code; this is what it checks of each filter."""
import json
from pathlib import Path

import pytest
import torch
from helpers import official_state_dict
from official import build_ours

from medmamba.weights import convert_state_dict

ROOT = Path(__file__).resolve().parents[1]

FIXTURES = sorted((ROOT / "tests" / "data" / "official_keys").glob("*.json"))
CASES = [(path, name) for path in FIXTURES for name in json.loads(path.read_text(encoding="utf-8"))["cases"]]


@pytest.mark.parametrize("path,case_name", CASES, ids=[f"{p.stem}-{n}" for p, n in CASES])
def test_filter_loads_every_tensor_from_its_sources(path, case_name):
    fixture = json.loads(path.read_text(encoding="utf-8"))
    case = fixture["cases"][case_name]
    assert fixture["repository"] and len(fixture["commit"]) == 40
    official = official_state_dict(case)
    with torch.device("meta"):
        ours = build_ours(fixture["entry"], case["ours"])
    report = convert_state_dict(fixture["entry"], official, ours)
    assert report.complete, report.summary()
    first_name = {name: names[0] for names in case["aliases"] for name in names}
    for key, value in report.state_dict.items():
        tensors = list(dict.fromkeys(first_name.get(name, name) for name in report.sources[key]))
        # in our dtype, as the converter casts (float noise under an integer name, e.g. BatchNorm's
        # num_batches_tracked, becomes its integer part)
        expected = torch.cat([official[name].flatten() for name in tensors]).to(value.dtype)
        if len(tensors) > 1:  # stacked or split by the filter: compare the values whatever their order
            value, expected = value.flatten().sort().values, expected.sort().values
        assert torch.equal(value.flatten(), expected), (key, tensors)
