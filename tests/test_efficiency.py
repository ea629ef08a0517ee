"""Efficiency profiling: FLOPs against closed-form counts, scan counting, memory and the CLI."""
import csv
import json

import pytest
import torch
import torch.nn as nn

from medmamba.cli import main
from medmamba.evaluation.efficiency import count_flops, profile_model
from medmamba.kernels import selective_scan


def conv_flops(c_in, c_out, k, out_pixels):
    return 2 * c_in * c_out * k * k * out_pixels


def test_conv_net_flops_params_and_memory():
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    r = profile_model(net, (1, 2, 16, 16), repeats=2, warmup=1)
    assert r["params"] == (2 * 8 * 9 + 8) + (8 * 4 + 4)
    assert r["flops"] == conv_flops(2, 8, 3, 256) + conv_flops(8, 4, 1, 256)
    assert r["flops_scan"] == 0 and r["scan_calls"] == 0
    # The pass keeps at least the 8-channel float32 activation (8*16*16*4 bytes) alive.
    assert r["peak_memory_bytes"] >= 8 * 256 * 4
    assert r["memory_method"] == "torch_profiler"
    assert r["latency_ms"] > 0 and r["latency_ms_min"] <= r["latency_ms"] <= r["latency_ms_max"]


class Big(nn.Module):
    def forward(self, x):
        return x.new_zeros(1 << 20).sum() + x  # a 4 MiB temporary


def test_peak_memory_sees_temporaries():
    r = profile_model(Big(), (1, 1, 4, 4), repeats=1, warmup=0)
    assert r["peak_memory_bytes"] >= 4 * (1 << 20)


class ScanOnly(nn.Module):
    def forward(self, x):  # x: (1, 16, 64); A with N = 16
        return selective_scan(x, x, -torch.ones(16, 16), x[:, :16], x[:, :16], backend="torch")


def test_peak_memory_counts_the_scans_reused_buffers():
    """The torch scan keeps its block buffers (decays, states: 16 * 16 * 64 floats each here) between calls; after
    warm-up they are already allocated, and the measurement still counts them."""
    r = profile_model(ScanOnly(), (1, 16, 64), repeats=1, warmup=2)
    assert r["peak_memory_bytes"] >= 2 * 16 * 16 * 64 * 4


class SSMNet(nn.Module):
    """x_proj matmul, then one selective scan."""

    def __init__(self, d=8, n=4, backend="auto"):
        super().__init__()
        self.n, self.backend = n, backend
        self.x_proj = nn.Linear(d, 1 + 2 * n, bias=False)
        self.dt_bias = nn.Parameter(torch.zeros(d))
        self.A_log = nn.Parameter(torch.zeros(d, n))
        self.D = nn.Parameter(torch.ones(d))

    def forward(self, x):  # (b, d, L)
        proj = self.x_proj(x.transpose(1, 2)).transpose(1, 2)  # (b, 1 + 2n, L)
        dt, B, C = torch.split(proj, [1, self.n, self.n], dim=1)
        return selective_scan(x, dt.expand_as(x), -torch.exp(self.A_log), B.contiguous(), C.contiguous(), self.D,
                              delta_bias=self.dt_bias, delta_softplus=True, backend=self.backend)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_scan_flops_come_from_the_operators_formula(backend):
    """Closed-form count for every backend: the torch backend's own matmuls inside the operator are not counted."""
    b, d, n, length = 2, 8, 4, 12
    r = count_flops(SSMNet(d, n, backend), torch.randn(b, d, length))
    assert r["scan_calls"] == 1
    # state recurrence 8*b*d*N*L; D skip 2*b*d*L; delta bias + softplus 2*b*d*L
    assert r["flops_scan"] == 8 * b * d * n * length + 4 * b * d * length
    assert r["flops"] == 2 * b * length * d * (1 + 2 * n) + r["flops_scan"]  # + the x_proj matmul


def test_scan_flops_on_the_meta_device_and_every_optional_term():
    """The catalog counts on the meta device (the operator's fake implementation); z adds 2*b*d*L."""
    b, d, n, length = 1, 4, 2, 3
    x = torch.empty(b, d, length, device="meta")

    class Gated(nn.Module):
        def forward(self, x):
            return selective_scan(x, x, torch.empty(d, n, device="meta"), x[:, :n], x[:, :n], z=x)

    r = count_flops(Gated(), x)
    assert r == {"flops": 8 * b * d * n * length + 2 * b * d * length, "flops_scan": r["flops"], "scan_calls": 1}


def test_cli_efficiency_sweep(tmp_path):
    out = tmp_path / "eff"
    argv = ["evaluate", "efficiency", "--models", "plainconvunet", "--no-baselines", "--sizes", "16", "32", "64",
            "--dims", "2", "--repeats", "1", "--warmup", "0", "-o", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "efficiency.json").read_text())
    rows = {r["size"]: r for r in data["results"]}
    assert "Expected more than 1 spatial element" in rows[16]["error"]  # 5 stages leave 1x1: recorded, not fatal
    # Convolutions only, so FLOPs scale with the number of pixels; parameters do not change.
    assert rows[64]["flops"] == 4 * rows[32]["flops"] and rows[64]["params"] == rows[32]["params"]
    with open(out / "efficiency.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_unknown_model_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "eff"
    assert main(["evaluate", "efficiency", "--models", "no_such_net", "--sizes", "16", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such_net" in err and len(err.splitlines()) == 1
    assert not out.exists()
