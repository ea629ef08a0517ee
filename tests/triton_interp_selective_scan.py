"""Triton selective scan under TRITON_INTERPRET=1 (run by test_selective_scan.py in a subprocess with the flag set
before triton is imported). Small tiles so several chunks, a remainder chunk and partial channel blocks occur."""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1 (see test_selective_scan.py)"

from test_selective_scan import CASES, check_against_reference, make_inputs, reference_scan  # noqa: E402

from medmamba.kernels import selective_scan  # noqa: E402
from medmamba.kernels import selective_scan_triton as triton_module  # noqa: E402


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    monkeypatch.setattr(triton_module, "BLOCK_D", 2)
    monkeypatch.setattr(triton_module, "BLOCK_T", 8)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_triton_matches_reference(case):
    _, kwargs, softplus, last_state = case
    def fn(**kw):
        return selective_scan(**kw, return_last_state=last_state, backend="triton")

    check_against_reference(fn, make_inputs(**kwargs), softplus, last_state, atol=2e-5, rtol=1e-4)


def test_triton_default_tiles(monkeypatch):
    monkeypatch.undo()
    inputs = make_inputs(batch=1, dim=5, L=40, G=1)
    def fn(**kw):
        return selective_scan(**kw, return_last_state=True, backend="triton")

    check_against_reference(fn, inputs, True, True, atol=2e-5, rtol=1e-4)


def test_triton_bf16_without_grad():
    """bf16 inputs and output, float32 state, no autograd (no checkpoints stored); tolerance 2e-2 of the output
    scale (as for the torch path)."""
    inputs = make_inputs(dim=6, L=21, G=2, dtype=torch.bfloat16)
    assert not any(t.requires_grad for t in inputs.values() if t is not None)
    out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
    ref_out, ref_last = reference_scan(**inputs, delta_softplus=True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_out, atol=2e-2 * ref_out.abs().max().item(), rtol=2e-2)
    torch.testing.assert_close(last.double(), ref_last, atol=1e-4 * ref_last.abs().max().item(), rtol=1e-4)
