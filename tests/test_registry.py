"""Registry-wide: every entry builds and trains one step at a small size in every dims it claims, metadata is
complete, paper presets land within 5% of the paper's parameter count, the catalog CLI lists every entry."""
import json
import math
import re

import pytest
import torch

import medmamba
from medmamba.registry import FAMILIES, TASKS, Paper, ReportedResult


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small nets on a shared 2-core CI box: one intra-op thread avoids oversubscription (10x slower otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NAMES = medmamba.list_models()
CASES = [(n, d) for n in NAMES for d in medmamba.model_entry(n).spatial_dims]
SMALL = {2: (32, 32), 3: (16, 16, 16)}
SMALL_RESTORATION = {2: (12, 16), 3: (8, 8, 6)}  # no downsampling: any size, non-square on purpose


def test_registry_size_and_tasks():
    assert len(NAMES) >= 12
    for task in TASKS:
        assert medmamba.list_models(task=task), f"no {task} model"


@pytest.mark.parametrize("name,spatial_dims", CASES)
def test_forward_backward_small(name, spatial_dims):
    torch.manual_seed(0)
    entry = medmamba.model_entry(name)
    in_channels = 2
    if entry.task == "restoration":
        net = medmamba.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, preset="tiny")
        x = torch.randn(2, in_channels, *SMALL_RESTORATION[spatial_dims])
        expected = x.shape
    else:
        net = medmamba.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=3,
                                    preset="tiny")
        x = torch.randn(2, in_channels, *SMALL[spatial_dims])
        expected = (2, 3) if entry.task == "classification" else (2, 3, *x.shape[2:])
    net.train()
    out = net(x)
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    assert tuple(outputs[0].shape) == tuple(expected)
    for o in outputs[1:]:  # deep supervision: lower resolutions, same classes
        assert o.shape[:2] == outputs[0].shape[:2] and o.dim() == outputs[0].dim()
    loss = sum(o.float().pow(2).mean() for o in outputs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outputs)
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", NAMES)
def test_metadata_complete(name):
    e = medmamba.model_entry(name)
    assert e.task in TASKS and e.family in FAMILIES
    assert e.spatial_dims and set(e.spatial_dims) <= {2, 3}
    assert isinstance(e.scan, str) and e.scan.strip()
    assert isinstance(e.paper, Paper) and e.paper.title.strip() and e.paper.venue.strip()
    assert 2015 <= e.paper.year <= 2030
    assert re.fullmatch(r"\d{4}\.\d{4,5}", e.paper.arxiv), e.paper.arxiv
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/?", e.code_url), e.code_url
    for r in e.reported:
        assert isinstance(r, ReportedResult) and r.dataset.strip() and r.metric.strip()
        assert isinstance(r.value, (int, float)) and math.isfinite(r.value)
    for d in e.spatial_dims:
        shape = e.reference_input[d]
        assert len(shape) == 1 + d and all(isinstance(s, int) and s > 0 for s in shape)
    assert "tiny" in e.presets
    if e.paper_params_m is not None:
        assert "paper" in e.presets and e.paper_params_m > 0
    json.dumps(e.as_dict())  # serialisable for the catalog


def test_every_paper_reports_results():
    """Each cited paper has at least one of its reported results on some entry (variants of one paper share)."""
    by_paper = {}
    for name in NAMES:
        by_paper.setdefault(medmamba.model_entry(name).paper.arxiv, []).append(name)
    missing = [names for names in by_paper.values() if not any(medmamba.model_entry(n).reported for n in names)]
    assert missing == []


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,spatial_dims", CASES)
def test_builds_on_meta_device(name, spatial_dims):
    """Every preset builds without reading tensor values (no allocation), and meta counts are real counts."""
    e = medmamba.model_entry(name)
    in_channels = e.reference_input[spatial_dims][0]
    with torch.device("meta"):
        nets = {p: medmamba.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, preset=p)
                for p in e.presets}
    assert all(_count(net) > 0 for net in nets.values())
    assert {t.device.type for net in nets.values() for t in net.parameters()} == {"meta"}
    tiny = medmamba.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, preset="tiny")
    assert _count(nets["tiny"]) == _count(tiny)


@pytest.mark.parametrize("name", [n for n in NAMES if medmamba.model_entry(n).paper_params_m is not None])
def test_paper_preset_parameter_count(name):
    e = medmamba.model_entry(name)
    d = e.spatial_dims[0]
    with torch.device("meta"):
        net = medmamba.create_model(name, spatial_dims=d, in_channels=e.reference_input[d][0], preset="paper")
    params_m = _count(net) / 1e6
    assert abs(params_m - e.paper_params_m) <= 0.05 * e.paper_params_m, (params_m, e.paper_params_m)


@pytest.mark.parametrize("name", NAMES)
def test_paper_size_is_given_or_explained(name):
    """A missing paper parameter count is explained in the notes, never silently absent; a count taken from the
    official code (the paper states none) says where it was counted."""
    e = medmamba.model_entry(name)
    assert e.params_source in ("paper", "official code")
    if e.paper_params_m is None:
        assert "parameter count" in e.notes, e.notes
    elif e.params_source == "official code":
        assert "counted from its modules" in e.notes, e.notes


def test_catalog_json_lists_every_entry(capsys):
    from medmamba.cli import main

    assert main(["catalog", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == NAMES
    for r in rows:
        assert {"name", "task", "spatial_dims", "family", "scan", "paper", "params"} <= set(r)
        assert isinstance(r["params"], int) and r["params"] > 0
        assert set(r["paper"]) == {"title", "venue", "year", "arxiv"}
        if r["measured"] is not None:  # a latency is measured, or its absence explained
            assert r["flops"] > 0
            assert r["latency_ms"] > 0 if r["latency_ms"] is not None else r["measured"]["latency_note"].strip()
    assert main(["catalog", "--json", "--task", "restoration", "--dims", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == medmamba.list_models(task="restoration", spatial_dims=3)
    assert main(["catalog", "--task", "classification"]) == 0
    table = capsys.readouterr().out
    for name in medmamba.list_models(task="classification"):
        assert name in table


def test_list_models_filters():
    for task in TASKS:
        for d in (2, 3):
            names = medmamba.list_models(task=task, spatial_dims=d)
            expected = [n for n in NAMES if medmamba.model_entry(n).task == task
                        and d in medmamba.model_entry(n).spatial_dims]
            assert names == expected
    assert medmamba.list_models(spatial_dims=1) == []
    assert medmamba.list_models(task="detection") == []


def test_create_model_errors():
    with pytest.raises(KeyError, match="unknown model 'no_such_net'"):
        medmamba.create_model("no_such_net")
    name = NAMES[0]
    with pytest.raises(ValueError, match="spatial_dims"):
        medmamba.create_model(name, spatial_dims=1)
    with pytest.raises(ValueError, match="no preset"):
        medmamba.create_model(name, preset="no_such_preset")
    with pytest.raises(ValueError, match="num_classes or out_channels"):
        medmamba.create_model(name, num_classes=2, out_channels=3)


def test_catalog_measurements_resume(tmp_path):
    """Each entry is written as soon as it is measured; a rerun skips entries measured at their current reference
    configuration, re-measures stale ones, and ``force`` re-measures everything."""
    from models import measure_catalog, measure_entry  # benchmarks/models.py

    from medmamba.catalog import load_measurements, reference_config

    class Interrupted(Exception):
        pass

    names = NAMES[:3]
    path = tmp_path / "catalog-cpu.json"
    calls, fail_on = [], {names[2]}

    def fake(name):  # stands in for real passes
        calls.append(name)
        if name in fail_on:
            raise Interrupted(name)
        return measure_entry(name, "cpu", {"params": 1, "flops": 2}, {"latency_ms": 3.0, "peak_memory_mb": 4.0})

    with pytest.raises(Interrupted):
        measure_catalog(names, path=path, measure=fake)
    stored = load_measurements(path)
    assert sorted(stored) == sorted(names[:2])
    assert stored[names[0]]["input_shape"] == list(reference_config(names[0])["input_shape"])
    stored[names[1]]["input_shape"] = [1, 1, 7]  # stale: taken at another input
    path.write_text(json.dumps(stored))
    calls.clear()
    fail_on.clear()
    measure_catalog(names, path=path, measure=fake)
    assert calls == names[1:]
    calls.clear()
    measure_catalog(names, path=path, measure=fake)
    assert calls == []
    measure_catalog(names, path=path, measure=fake, force=True)
    assert calls == names and sorted(load_measurements(path)) == sorted(names)
