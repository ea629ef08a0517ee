"""benchmarks/gpu_check.py on the CPU: the no-GPU stop, its pure helpers (errors, bandwidth, bars, JSON, plot), its
checks against deliberately wrong kernels, the real Triton path under TRITON_INTERPRET=1, and the run's
orchestration with stand-in sections."""
import copy
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import medmamba.kernels

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.py"


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load_gpu_check()


def test_no_gpu_stops_at_once_with_one_line(monkeypatch, capsys):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(GPU_CHECK)], env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=120)
    assert proc.returncode == gpu_check.NO_GPU_EXIT == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == gpu_check.NO_GPU_LINE
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--quick"]) == 2
    assert capsys.readouterr() == ("", gpu_check.NO_GPU_LINE + "\n")


def test_bad_arguments_name_the_option(capsys):
    for argv, option in ((["--sections", "bogus"], "--sections"), (["--budget-scale", "0"], "--budget-scale")):
        with pytest.raises(SystemExit) as info:
            gpu_check.main(argv)
        assert info.value.code == 2
        assert option in capsys.readouterr().err


def test_time_boxes_fit_the_run():
    """Full run within 8 minutes with room for start-up; --quick within 3."""
    assert set(gpu_check.BUDGETS_S) == set(gpu_check.SECTIONS)
    assert sum(gpu_check.BUDGETS_S.values()) <= 7.5 * 60
    assert set(gpu_check.QUICK_BUDGETS_S) == set(gpu_check.QUICK_SECTIONS)
    assert sum(gpu_check.QUICK_BUDGETS_S.values()) <= 2.75 * 60


def test_rel_error():
    assert gpu_check.rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5])) == pytest.approx(0.2)
    assert gpu_check.rel_error(torch.tensor([0.5]), torch.zeros(1)) == pytest.approx(0.5)  # absolute on zeros
    assert math.isnan(gpu_check.rel_error(torch.tensor([math.nan, 1.0]), torch.ones(2)))
    assert gpu_check.rel_error(torch.tensor([math.inf]), torch.ones(1)) == math.inf


def test_bandwidth_arithmetic():
    """Bytes a scan must move (read u, delta, z, B, C, write out; backward reads those and dout, writes five
    gradients), over its time, against the copy: counted here by hand for dim 768, L 16384, N 16, bf16."""
    assert gpu_check.gb_per_s(2e9, 1.0) == pytest.approx(2000.0)
    dim, length, n, size = 768, 16384, 16, 2
    fwd = (4 * dim + 2 * n) * length * size
    fwd_bwd = fwd + (4 * dim + 2 * n) * length * size + (3 * dim + 2 * n) * length * size
    min_bytes = gpu_check.bench("kernels")._min_bytes(1, dim, length, n, size)
    assert min_bytes == {"fwd": fwd, "fwd_bwd": fwd_bwd}
    case = gpu_check.add_bandwidth({"triton_fwd_ms": 0.05, "triton_fwd_bwd_ms": 0.2}, min_bytes, copy_gbps=4000.0)
    assert case["triton_fwd_gb_per_s"] == pytest.approx(fwd / 0.05e-3 / 1e9)
    assert case["triton_fwd_copy_fraction"] == pytest.approx(fwd / 0.05e-3 / 1e9 / 4000.0)
    assert case["triton_fwd_bwd_copy_fraction"] == pytest.approx(fwd_bwd / 0.2e-3 / 1e9 / 4000.0)


def _scan_case(length, dtype, fraction, mamba_ratio):
    return {"batch": 1, "dim": 768, "L": length, "N": 16, "dtype": dtype, "triton_fwd_ms": 1.0,
            "triton_fwd_bwd_ms": 3.0, "mamba_ssm_fwd_ms": 1.1, "mamba_ssm_fwd_bwd_ms": 3.0 * mamba_ratio,
            "speedup_fwd_vs_mamba_ssm": 1.1, "speedup_fwd_bwd_vs_mamba_ssm": mamba_ratio,
            "triton_fwd_gb_per_s": 4000.0 * fraction, "triton_fwd_copy_fraction": fraction,
            "triton_fwd_bwd_gb_per_s": 2000.0, "triton_fwd_bwd_copy_fraction": 0.5}


def synthetic_sections() -> dict:
    """Section records as a run writes them, every bar met (the L 4096 case's low bandwidth does not count)."""
    ok = {"status": "ok", "seconds": 1.0, "budget_s": 60}
    scan_cases = [_scan_case(4096, "bfloat16", 0.3, 1.3), _scan_case(16384, "bfloat16", 0.8, 1.2),
                  _scan_case(65536, "float32", 0.9, 1.25)]
    model_verdicts = [{"model": "vm_unet", "dims": 2, "size": 1248, "memory_ratio": 0.1, "latency_ratio": 0.4},
                      {"model": "segmamba", "dims": 3, "size": 256,
                       "note": "not both measured: swinunetr: OutOfMemoryError: CUDA out of memory"}]
    trainer_rows = {"MHSVMTrainer": {"s_per_iter": 1.1, "peak_mem_mb": 800.0, "time_ratio": 1.1, "mem_ratio": 0.8},
                    "VMUNetTrainer": {"error": "not measured (time box)"}}
    return {
        "correctness": {**ok, "passed": True, "failed": [], "not_checked": [], "summary": "54/54 checks passed"},
        "networks_amp": {**ok, "passed": True, "failed": [], "not_checked": [], "summary": "52/52 finite"},
        "kernel_speed": {**ok, "summary": "copy 4000 GB/s", "copy": {"gb_per_s": 4000.0},
                         "scan": {"mamba_ssm": "measured", "cases": scan_cases},
                         "cross_scan": {"cases": [{"name": "2d", "dtype": "float32",
                                                   "speedup_triton_vs_torch": {"scan": 2.0, "merge": 1.8}}]},
                         "cross_scan_permutation": {"cases": [{"name": "mhs_C_2d", "dtype": "bfloat16",
                                                               "speedup_triton_vs_torch": {"scan": 1.6}}]}},
        "trainers": {**ok, "summary": "MHSVMTrainer 1.10x",
                     "configurations": {c: {"plan": c, "baseline": {"s_per_iter": 1.0, "peak_mem_mb": 1000.0},
                                            "trainers": copy.deepcopy(trainer_rows)} for c in ("3d_fullres", "2d")}},
        "models": {**ok, "summary": "1/2 comparisons", "goal": {"memory_ratio_max": 0.2, "latency_ratio_max": 0.5},
                   "verdicts": model_verdicts},
    }


def _bars(sections):
    return {b["bar"]: b for b in gpu_check.evaluate_bars(sections)}


def test_bars_all_met_from_synthetic_results():
    bars = _bars(synthetic_sections())
    assert set(bars) == set(gpu_check.BARS)
    assert {name: b["met"] for name, b in bars.items()} == {name: True for name in gpu_check.BARS}
    assert bars["scan_vs_mamba_ssm"]["value"] == pytest.approx(1.2)
    assert bars["scan_fwd_bandwidth"]["value"] == pytest.approx(0.8)  # L 4096's 0.3 is outside the bar
    assert bars["cross_scan_fused"]["value"] == pytest.approx(1.8)
    assert bars["cross_scan_permutation"]["value"] == pytest.approx(1.6)
    assert bars["mhsvm_trainer_3d"]["value"] == pytest.approx(1.1)
    assert bars["models_memory"]["value"] == pytest.approx(0.1)
    assert "segmamba 3d" in bars["models_memory"]["note"]


@pytest.mark.parametrize("bar, path, value", [
    ("correctness", ("networks_amp", "failed"), ["vm_unet 2d float16"]),
    ("correctness", ("correctness", "not_checked"), ["scan L65536_G2 float16"]),
    ("scan_vs_mamba_ssm", ("kernel_speed", "scan", "cases", 2, "speedup_fwd_bwd_vs_mamba_ssm"), 0.95),
    ("scan_fwd_bandwidth", ("kernel_speed", "scan", "cases", 2, "triton_fwd_copy_fraction"), 0.69),
    ("cross_scan_fused", ("kernel_speed", "cross_scan", "cases", 0, "speedup_triton_vs_torch", "merge"), 1.4),
    ("cross_scan_permutation", ("kernel_speed", "cross_scan_permutation", "cases", 0, "speedup_triton_vs_torch",
                                "scan"), 1.2),
    ("mhsvm_trainer_3d", ("trainers", "configurations", "3d_fullres", "trainers", "MHSVMTrainer", "time_ratio"), 1.3),
    ("models_memory", ("models", "verdicts", 0, "memory_ratio"), 0.25),
    ("models_latency", ("models", "verdicts", 0, "latency_ratio"), 0.6),
])
def test_each_bar_fails_when_its_figure_does(bar, path, value):
    sections = synthetic_sections()
    target = sections
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    bars = _bars(sections)
    assert bars[bar]["met"] is False
    assert all(b["met"] for name, b in bars.items() if name != bar)


def test_bars_not_measured_say_why():
    sections = synthetic_sections()
    for case in sections["kernel_speed"]["scan"]["cases"]:
        for key in [k for k in case if "mamba_ssm" in k]:
            del case[key]
    sections["kernel_speed"]["scan"]["mamba_ssm"] = "mamba_ssm not importable (ModuleNotFoundError: No module)"
    sections["models"]["verdicts"] = sections["models"]["verdicts"][1:]
    bars = _bars(sections)
    assert bars["scan_vs_mamba_ssm"]["met"] is None
    assert "mamba_ssm not importable" in bars["scan_vs_mamba_ssm"]["note"]
    assert bars["models_memory"]["met"] is None and "OutOfMemoryError" in bars["models_memory"]["note"]
    assert bars["scan_fwd_bandwidth"]["met"] is True

    none_run = _bars({})
    assert all(b["met"] is None for b in none_run.values())
    assert "not run" in none_run["correctness"]["note"]


def test_an_errored_section_fails_correctness_and_leaves_its_bars_unmeasured():
    sections = synthetic_sections()
    sections["networks_amp"] = {"status": "error", "error": "RuntimeError: CUDA error: an illegal memory access"}
    sections["kernel_speed"] = {"status": "error", "error": "RuntimeError: triton compile failed"}
    bars = _bars(sections)
    assert bars["correctness"]["met"] is False and "illegal memory access" in bars["correctness"]["note"]
    for name in ("scan_vs_mamba_ssm", "scan_fwd_bandwidth", "cross_scan_fused", "cross_scan_permutation"):
        assert bars[name]["met"] is None and "triton compile failed" in bars[name]["note"]
    assert gpu_check.bar_line(bars["correctness"]).startswith("bar correctness")
    assert "FAILED" in gpu_check.bar_line(bars["correctness"])


def test_write_json_goes_through_a_temporary_name(tmp_path, monkeypatch):
    target = tmp_path / "gpu-check-x.json"
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    gpu_check.write_json({"a": 1.5, "worst": math.nan, "nested": [math.inf]}, target)
    assert len(renames) == 1
    src, dst = renames[0]
    assert dst == target and src.parent == tmp_path and src.name != target.name
    assert json.loads(target.read_text()) == {"a": 1.5, "worst": "nan", "nested": ["inf"]}
    with pytest.raises(TypeError):
        gpu_check.write_json({"not json": object()}, target)
    assert json.loads(target.read_text())["a"] == 1.5  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary left behind


def test_plot_from_synthetic_results(tmp_path):
    result = {"gpu": "NVIDIA H200", "commit": "abc1234", "sections": synthetic_sections()}
    for name, sections in (("full.png", result), ("empty.png", {"sections": {}})):
        gpu_check.plot(sections, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# ---- checks against deliberately wrong kernels (CPU, no Triton: the "triton" backend is stood in for) ----

def _scan_standing_in_for_triton(factor):
    real = medmamba.kernels.selective_scan

    def scan(*args, backend="auto", **kwargs):
        result = real(*args, backend="torch", **kwargs)
        if backend != "triton":
            return result
        out, last = result if isinstance(result, tuple) else (result, None)
        out = out * factor
        return (out, last) if last is not None else out

    return scan


@pytest.mark.parametrize("step_loop_max_l", [4096, 10])  # 10: the float64 torch path is the reference
def test_scan_check_passes_a_right_kernel_and_fails_a_wrong_one(monkeypatch, step_loop_max_l):
    monkeypatch.setattr(gpu_check, "STEP_LOOP_MAX_L", step_loop_max_l)
    case = next(c for c in gpu_check.cpu_scan_tests().CASES if c[0] == "all_on_G2")
    monkeypatch.setattr(gpu_check, "selective_scan", _scan_standing_in_for_triton(1.0))
    right = gpu_check.check_scan_case(case, torch.float32, "cpu")
    assert right["passed"] and right["worst_rel_error"] < 1e-5, right
    assert right["reference"].startswith("float64 step loop" if step_loop_max_l > 37 else "float64 torch path")
    assert {"out", "last_state", "grad_u", "grad_A", "grad_B", "grad_delta_bias"} <= set(
        right["rel_errors"]["triton_vs_reference"])
    monkeypatch.setattr(gpu_check, "selective_scan", _scan_standing_in_for_triton(1.001))
    wrong = gpu_check.check_scan_case(case, torch.float32, "cpu")
    assert not wrong["passed"]
    assert wrong["rel_errors"]["triton_vs_reference"]["out"] == pytest.approx(1e-3, rel=0.05)
    assert wrong["rel_errors"]["torch_vs_reference"]["out"] < 1e-5


def test_cross_scan_check_passes_a_right_kernel_and_fails_a_wrong_one(monkeypatch):
    kernels = medmamba.kernels
    names = [n for n in ("cross_scan", "cross_merge", "cross_unscan") if hasattr(kernels, n)]
    real = {n: getattr(kernels, n) for n in names}

    def stand_in(name, break_it):
        def op(*args, backend="auto", **kwargs):
            out = real[name](*args, backend="torch", **kwargs)
            return out.roll(1, -1) if backend == "triton" and break_it else out
        return op

    for break_it in (False, True):
        for name in names:
            monkeypatch.setattr(kernels, name, stand_in(name, break_it and name == "cross_scan"))
        record = gpu_check.check_cross_scan("axis_3d", kernels.ROUTES_3D, (2, 3, 4, 5, 6), torch.float32, "cpu")
        assert record["passed"] is not break_it, record
        assert (record["rel_errors"]["scan"] > 0) is break_it
        assert record["rel_errors"]["merge"] == 0.0


def test_guarded_check_records_an_error_and_fails():
    record = gpu_check._guarded("scan X float16", lambda: 1 / 0)
    assert record == {"check": "scan X float16", "passed": False, "error": "ZeroDivisionError: division by zero"}


# ---- networks under autocast ----

class WithUnusedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.body(x)


class Overflowing(nn.Module):
    """Finite outputs, but every gradient inf (d sqrt(v)/dv at v = 0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y + torch.sqrt(y - y.detach())


class NaNOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return [self.conv(x), self.conv(x) * math.nan]  # deep-supervision style list


@pytest.mark.parametrize("dtype", gpu_check.AMP_DTYPES)
def test_amp_check(dtype):
    x = torch.randn(1, 1, 8, 8)
    record = gpu_check.amp_check(WithUnusedLayer(), x, dtype)
    assert record["passed"] and record["loss_scale"] in gpu_check.LOSS_SCALES, record
    assert record["params_without_grad"] == 2 and record["dtype"] == str(dtype).removeprefix("torch.")

    record = gpu_check.amp_check(Overflowing(), x, dtype)
    assert record["outputs_finite"] and not record["grads_finite"] and not record["passed"]
    assert record["loss_scale"] == 1.0 and "conv.weight" in record["nonfinite_grads"]

    record = gpu_check.amp_check(NaNOutput(), x, dtype)
    assert not record["outputs_finite"] and not record["passed"]


# ---- the real Triton path, on the CPU under the interpreter ----

@pytest.mark.slow
def test_triton_checks_and_first_call_under_interpreter():
    """check_scan_case, check_cross_scan (axis and, where exported, permutation routes) and first_call_child run
    the real Triton kernels under TRITON_INTERPRET=1 (set before triton is imported, hence the subprocess)."""
    code = f"""
import importlib.util, json
import torch
spec = importlib.util.spec_from_file_location("gpu_check", {str(GPU_CHECK)!r})
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
case = next(c for c in g.cpu_scan_tests().CASES if c[0] == "all_on_G2")
scan = g.check_scan_case(case, torch.float32, "cpu")
sets, note = g.route_sets()
cross = [g.check_cross_scan(name, routes, (1, 2, 3, 4, 5) if dims == 3 else (2, 3, 5, 7), torch.bfloat16, "cpu")
         for name, (dims, routes) in sets.items() if name in ("axis_3d", "mhs_S_2d", "mhs_X_3d")]
first = g.first_call_child("cpu", dim=4, length=40, channels=2, edge=6)
print(json.dumps(dict(scan=scan, cross=cross, first=first, note=note)))
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["scan"]["passed"] and result["scan"]["worst_rel_error"] < 1e-5, result["scan"]
    assert result["cross"] and all(c["passed"] for c in result["cross"]), result["cross"]
    assert len(result["cross"]) == (1 if result["note"] else 3)
    assert set(result["first"]) == {"cuda_context_s", "scan_first_fwd_s", "scan_first_bwd_s", "scan_next_fwd_s",
                                    "scan_next_bwd_s", "cross_first_s", "cross_next_s"}
    assert all(v > 0 for v in result["first"].values())


# ---- the run: sections in their own try blocks, JSON after each, exit status ----

def test_run_section_times_and_isolates_errors():
    seen = {}

    def section(deadline, quick):
        seen["remaining"], seen["quick"] = deadline.remaining(), quick
        return {"summary": "fine", "passed": True}

    record = gpu_check.run_section("correctness", section, 30, quick=True)
    assert record["status"] == "ok" and 0 < seen["remaining"] <= 30 and seen["quick"]
    assert gpu_check.section_line("correctness", record).startswith("gpu-check: correctness   PASS  fine (0 s of 30 s)")
    record = gpu_check.run_section("models", lambda deadline, quick: {}["missing"], 30, quick=False)
    assert record["status"] == "error" and record["error"] == "KeyError: 'missing'"
    assert record["traceback"][-1] == "KeyError: 'missing'"
    assert "ERROR" in gpu_check.section_line("models", record)


def test_main_runs_every_section_and_merges_a_rerun(tmp_path, monkeypatch, capsys):
    sections = synthetic_sections()

    def stand_in(name):
        def section(deadline, quick):
            if name == "first_call":
                raise RuntimeError("child crashed")
            return {k: v for k, v in sections[name].items() if k not in ("status", "seconds", "budget_s")}
        return section

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    monkeypatch.setattr(gpu_check, "SECTION_FUNCTIONS", {n: stand_in(n) for n in gpu_check.SECTIONS})
    assert gpu_check.main(["--out-dir", str(tmp_path)]) == 1  # the errored section
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[:6]] == list(gpu_check.SECTIONS)
    assert "ERROR RuntimeError: child crashed" in lines[3]
    assert sum(line.startswith("bar ") for line in lines) == len(gpu_check.BARS)
    result = json.loads((tmp_path / "gpu-check-nvidia-h200.json").read_text())
    assert result["sections"]["first_call"]["status"] == "error"
    assert all(b["met"] for b in result["bars"])
    assert (tmp_path / "gpu-check-nvidia-h200.png").is_file()

    monkeypatch.setitem(gpu_check.SECTION_FUNCTIONS, "first_call", lambda deadline, quick: {"summary": "ok"})
    assert gpu_check.main(["--out-dir", str(tmp_path), "--sections", "first_call"]) == 0
    result = json.loads((tmp_path / "gpu-check-nvidia-h200.json").read_text())
    assert result["sections"]["first_call"]["status"] == "ok"
    assert set(result["sections"]) == set(gpu_check.SECTIONS)  # the others kept from the full run

    sections["trainers"]["configurations"]["3d_fullres"]["trainers"]["MHSVMTrainer"]["time_ratio"] = 1.5
    assert gpu_check.main(["--out-dir", str(tmp_path), "--sections", "trainers"]) == 1  # a bar failed
    assert not (tmp_path / "gpu-check-nvidia-h200-quick.json").exists()


# ---- benchmarks/trainers.py's plans, as the trainers section measures them ----

def test_trainer_plans_for_the_gpu_check():
    trainers = gpu_check.bench("trainers")
    assert trainers.plan_description("cuda", "3d_fullres") == "3d_fullres patch 128x128x128, batch 2, 6 stages"
    assert trainers.plan_description("cuda", "2d") == "2d patch 512x512, batch 2, 8 stages"
    plans = trainers.plans_for("cuda", "2d")
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert arch["conv_op"].endswith("Conv2d") and arch["norm_op"].endswith("InstanceNorm2d")
    assert len(plans["original_median_shape_after_transp"]) == 3
    with pytest.raises(ValueError, match="configuration '3d_lowres'"):
        trainers.plans_for("cuda", "3d_lowres")
    base = {"s_per_iter": 2.0, "peak_mem_mb": 100.0}
    assert trainers.with_ratios({"s_per_iter": 3.0, "peak_mem_mb": 50.0}, base)["time_ratio"] == 1.5
    assert "time_ratio" not in trainers.with_ratios({"s_per_iter": 3.0, "peak_mem_mb": 50.0}, {"error": "x"})


# ---- sections' bookkeeping, with their measurements stood in for (the real ones need a GPU) ----

def test_first_call_section_runs_two_processes_on_one_new_cache(monkeypatch):
    calls = []
    child = {"cuda_context_s": 0.1, "scan_first_fwd_s": 3.0, "scan_first_bwd_s": 5.0, "scan_next_fwd_s": 0.01,
             "scan_next_bwd_s": 0.02, "cross_first_s": 1.0, "cross_next_s": 0.01}

    def run(command, env, **kwargs):
        calls.append((command, env["TRITON_CACHE_DIR"]))
        if len(calls) == 1:
            return subprocess.CompletedProcess(command, 0, "triton says hi\n" + json.dumps(child) + "\n", "")
        return subprocess.CompletedProcess(command, 1, "", "Traceback ...\nRuntimeError: no kernel image\n")

    monkeypatch.setattr(gpu_check.subprocess, "run", run)
    result = gpu_check.first_call(gpu_check.Deadline(60))
    assert len(calls) == 2 and calls[0][1] == calls[1][1] and "--first-call-child" in calls[0][0]
    assert not Path(calls[0][1]).exists()  # the cache folder is removed afterwards
    empty = result["runs"]["empty_cache"]
    assert empty["scan_first_call_s"] == pytest.approx(8.0) and empty["scan_compile_s"] == pytest.approx(7.97)
    assert result["runs"]["warm_cache"] == {"error": "RuntimeError: no kernel image"}
    assert "first scan call 8.00 s" in result["summary"] and "no kernel image" in result["summary"]


def test_trainers_section_measures_the_bar_first_and_respects_its_time_box(monkeypatch):
    trainers = gpu_check.bench("trainers")
    order = []

    def measure(name, device, iters, configuration, timeout):
        order.append((configuration, name))
        if len(order) > 4:
            monkeypatch.setattr(gpu_check.Deadline, "expired", lambda self, need=0.0: True)
        seconds = {"nnUNetTrainer": 1.0, "MHSVMTrainer": 1.1}.get(name, 2.0)
        return {"s_per_iter": seconds, "peak_mem_mb": 100 * seconds, "skipped_nonfinite_steps": name == "MHSVMTrainer"}

    monkeypatch.setattr(trainers, "measure_in_subprocess", measure)
    result = gpu_check.trainers(gpu_check.Deadline(60))
    assert order[:4] == [("3d_fullres", "nnUNetTrainer"), ("3d_fullres", "MHSVMTrainer"), ("2d", "nnUNetTrainer"),
                         ("2d", "MHSVMTrainer")] and len(order) == 5
    rows = result["configurations"]["3d_fullres"]["trainers"]
    assert rows["MHSVMTrainer"]["time_ratio"] == pytest.approx(1.1) and rows["MHSVMTrainer"]["mem_ratio"] == 1.1
    assert rows["VMUNetTrainer"]["time_ratio"] == pytest.approx(2.0)
    assert result["configurations"]["2d"]["trainers"]["VMUNetTrainer"] == {"error": "not measured (time box)"}
    assert result["summary"].startswith("MHSVMTrainer 3d_fullres 1.10x nnUNetTrainer per iteration")
    assert "non-finite steps skipped: 3d_fullres MHSVMTrainer" in result["summary"]
    assert _bars({"trainers": {"status": "ok", **result}})["mhsvm_trainer_3d"]["met"] is True


def test_models_section_compares_with_swinunetr_where_both_fit(monkeypatch):
    import medmamba.evaluation.efficiency as efficiency

    def run_sweep(names, sizes, dims, **kwargs):
        (name,), (edge,) = names, sizes
        row = {"model": name, "baseline": name == "swinunetr", "size": edge, "params": 1}
        if dims == 3 and name == "swinunetr":
            return {"results": [{**row, "error": "CUDA out of memory. Tried to allocate 40.00 GiB"}]}
        scale = {"swinunetr": 1.0, "vm_unet": 0.1, "mhs_vm_unet": 0.15, "segmamba": 0.3}[name]
        return {"results": [{**row, "flops": 10.0, "latency_ms": 100 * scale, "peak_memory_mb": 1000 * scale}]}

    monkeypatch.setattr(efficiency, "run_sweep", run_sweep)
    result = gpu_check.models(gpu_check.Deadline(60))
    compared = {v["model"]: v for v in result["verdicts"] if v["dims"] == 2}
    assert compared["segmamba"]["memory_ratio"] == pytest.approx(0.3)
    assert compared["vm_unet"]["latency_ratio"] == pytest.approx(0.1)
    assert all("out of memory" in v["note"] for v in result["verdicts"] if v["dims"] == 3)
    bars = _bars({"models": {"status": "ok", **result}})
    assert bars["models_memory"]["met"] is False and bars["models_memory"]["value"] == pytest.approx(0.3)
    assert bars["models_latency"]["met"] is True and "out of memory" in bars["models_latency"]["note"]


def test_kernel_speed_section_bookkeeping(monkeypatch):
    kernels = gpu_check.bench("kernels")
    monkeypatch.setattr(gpu_check, "COPY_BYTES", 2 ** 20)
    monkeypatch.setattr(gpu_check, "SPEED_LENGTHS", (64, 16384))
    monkeypatch.setattr(gpu_check, "SPEED_DIMS", (8,))
    monkeypatch.setattr(kernels, "_time_ms", lambda fn, device, repeats: 0.5)  # the copy: 2 MiB in 0.5 ms
    monkeypatch.setattr(kernels, "_fwd_and_fwd_bwd", lambda fn, inputs, device, repeats: (0.001, 0.004))
    monkeypatch.setattr(gpu_check.bench("cross_scan_bench"), "run", lambda device, quick: {
        "cases": [{"name": "2d", "dtype": "float32", "speedup_triton_vs_torch": {"scan": 2.0}}]})
    monkeypatch.setattr(gpu_check, "permutation_cross_scan_speed", lambda device, quick, repeats: {"cases": []})
    monkeypatch.setattr(gpu_check, "mamba_ssm_scan", lambda: (None, "mamba_ssm not importable (stood in)"))
    result = gpu_check.kernel_speed(gpu_check.Deadline(60), device="cpu")
    assert result["copy"]["gb_per_s"] == pytest.approx(2 * 2 ** 20 / 0.5e-3 / 1e9)
    cases = result["scan"]["cases"]
    assert [(c["dtype"], c["L"]) for c in cases] == [("bfloat16", 64), ("bfloat16", 16384), ("float32", 64),
                                                     ("float32", 16384)]
    long_bf16 = cases[1]
    expected = kernels._min_bytes(1, 8, 16384, 16, 2)["fwd"] / 0.001e-3 / 1e9 / result["copy"]["gb_per_s"]
    assert long_bf16["triton_fwd_copy_fraction"] == pytest.approx(expected)
    assert result["scan"]["mamba_ssm"].startswith("mamba_ssm not importable")
    assert "of the copy" in result["summary"] and "mamba_ssm not importable" in result["summary"]
    bars = _bars({"kernel_speed": {"status": "ok", **result}})
    assert bars["scan_vs_mamba_ssm"]["met"] is None and bars["cross_scan_fused"]["met"] is True
    assert bars["cross_scan_permutation"]["met"] is None


def test_permutation_cross_scan_speed_times_every_pattern(monkeypatch):
    sets, note = gpu_check.route_sets()
    if note:
        assert gpu_check.permutation_cross_scan_speed(torch.device("cpu"), True, 1) == {"note": note, "cases": []}
        return
    monkeypatch.setattr(gpu_check.bench("cross_scan_bench"), "_measure",
                        lambda x, routes, backend, repeats: {"scan": 3.0 if backend == "torch" else 1.5})
    result = gpu_check.permutation_cross_scan_speed(torch.device("cpu"), True, 1)
    assert {c["name"] for c in result["cases"]} == {f"mhs_{p}_2d" for p in medmamba.kernels.MHS_PATTERNS}
    assert {c["dtype"] for c in result["cases"]} == {"float32", "bfloat16"}
    assert all(c["speedup_triton_vs_torch"] == {"scan": 2.0} and c["routes"] == 4 for c in result["cases"])
