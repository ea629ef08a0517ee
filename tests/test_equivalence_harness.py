"""The equivalence harness's own machinery (benchmarks/equivalence.py), on stand-ins for official code: weights
randomised everywhere, carried over by import_weights, outputs compared, verdicts and the results file."""
import json
import subprocess
import sys
from pathlib import Path

import equivalence
import pytest
import torch
import torch.nn as nn
from official import Case, Recipe

import medmamba

ROOT = Path(__file__).resolve().parents[1]

TINY = {"create_model": {"preset": "tiny", "spatial_dims": 2, "in_channels": 1, "num_classes": 2,
                         "deep_supervision": True}}


class WithEverything(nn.Module):
    """Zero biases, LayerNorm ones, a log decay rate, a module registered twice, a float and an index buffer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.norm = nn.LayerNorm(4)
        self.again = self.norm
        self.A_log = nn.Parameter(torch.log(torch.arange(1, 5.0)))
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("index", torch.arange(6))
        nn.init.zeros_(self.conv.bias)


def test_randomize_changes_every_float_tensor_once_and_keeps_log_decays_in_range():
    model = WithEverything()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    equivalence.randomize_(model)
    after = model.state_dict()
    for name in ("conv.weight", "conv.bias", "norm.weight", "norm.bias", "A_log", "scale"):
        assert not torch.equal(after[name], before[name]), name
    assert torch.equal(after["index"], before["index"])
    assert after["again.weight"].data_ptr() == after["norm.weight"].data_ptr()
    assert (after["A_log"] - before["A_log"]).abs().max() < 0.5


def _tiny_official():
    torch.manual_seed(3)
    return medmamba.create_model("umamba_bot", **TINY["create_model"])


@pytest.fixture
def identity_filter(monkeypatch):
    """umamba_bot takes its own keys: the 'official' model is ours under another seed."""
    monkeypatch.setattr(medmamba.model_entry("umamba_bot"), "checkpoint_filter", None)


def test_compare_matches_differs_and_not_run(identity_filter):
    match = equivalence.compare("umamba_bot", Case("same network", TINY, (2, 1, 16, 16), _tiny_official))
    assert match["verdict"] == "match" and match["max_rel_diff"] == 0.0 and len(match["outputs"]) == 2
    assert match["coverage"]["loaded"] == match["coverage"]["ours"] and match["configuration"]["preset"] == "tiny"

    def shifted(outputs):
        return [o + 1e-3 * o.abs().max() for o in outputs]

    differs = equivalence.compare("umamba_bot", Case("shifted", TINY, (2, 1, 16, 16), _tiny_official, shifted))
    assert differs["verdict"] == "differs" and 5e-4 < differs["max_rel_diff"] < 2e-3

    def cuda_only():
        raise RuntimeError("Found no NVIDIA driver on your system")

    not_run = equivalence.compare("umamba_bot", Case("cuda only", TINY, (2, 1, 16, 16), cuda_only))
    assert not_run["verdict"] == "not run" and "no NVIDIA driver" in not_run["reason"]


def test_incomplete_import_is_a_difference_with_the_report():
    broken = nn.Conv2d(1, 2, 3)  # nothing of umamba_bot's in it
    record = equivalence.compare("umamba_bot", Case("other model", TINY, (2, 1, 16, 16), lambda: broken))
    assert record["verdict"] == "differs" and "import incomplete" in record["reason"]
    assert "missing (ours): encoder.0.stem.0.conv1.0.weight" in record["reason"]


@pytest.fixture
def shim_removed_afterwards():
    """entry_record installs the mamba_ssm shim; other tests expect to install it themselves."""
    before = {name: module for name, module in sys.modules.items()
              if name.split(".")[0] in ("mamba_ssm", "causal_conv1d")}
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in ("mamba_ssm", "causal_conv1d")]:
        del sys.modules[name]
    sys.modules.update(before)


def test_entry_record_and_results_file(identity_filter, shim_removed_afterwards, tmp_path):
    checkout = tmp_path / "owner+repo"
    checkout.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
                                  "-m", "official code"]):
        subprocess.run(["git", "-C", str(checkout), *args], check=True)
    recipe = Recipe("umamba_bot", "owner/repo", "owner+repo", lambda _: [
        Case("same network", TINY, (1, 1, 16, 16), _tiny_official),
        Case("cuda only", TINY, (1, 1, 16, 16), lambda: torch.ones(1, device="cuda"))])
    record = equivalence.entry_record(recipe, checkout, progress=lambda line: None)
    assert record["commit"] == equivalence.git_commit(checkout) and len(record["commit"]) == 40
    assert record["verdict"] == "not run" and record["reason"].startswith("official code: ")
    assert [c["verdict"] for c in record["cases"]] == ["match", "not run"]

    results = tmp_path / "equivalence.json"
    results.write_text(json.dumps({"vim_tiny": {"entry": "vim_tiny", "verdict": "match"}}))
    equivalence.merge_results([record], results)
    stored = json.loads(results.read_text())
    assert sorted(stored) == ["umamba_bot", "vim_tiny"] and stored["umamba_bot"]["cases"][0]["verdict"] == "match"

    unrunnable = Recipe("mambaout_unet", "owner/none", "owner+none", None, not_runnable="no official U-Net")
    assert equivalence.entry_record(unrunnable, None) == {"entry": "mambaout_unet", "repository": "owner/none",
                                                         "verdict": "not run", "reason": "no official U-Net"}
