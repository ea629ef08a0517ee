"""Mamba's depthwise causal conv1d + SiLU: the numba kernels (what "auto" runs on the CPU) against F.conv1d + SiLU
(the reference, differentiated by torch), across the kernels' block boundary (2048 steps)."""
import numpy as np
import pytest
import torch

from medmamba.kernels import causal_conv1d_silu, causal_conv1d_silu_ref


@pytest.mark.parametrize("length", [1, 3, 2047, 2048, 2049, 4100])
@pytest.mark.parametrize("taps", [2, 4])
def test_numba_matches_reference_with_gradients(length, taps):
    gen = torch.Generator().manual_seed(length + taps)
    x = torch.randn(2, 3, length, dtype=torch.float64, generator=gen)
    weight = torch.randn(3, 1, taps, dtype=torch.float64, generator=gen)  # nn.Conv1d's layout
    bias = torch.randn(3, dtype=torch.float64, generator=gen)
    grad = torch.randn(2, 3, length, dtype=torch.float64, generator=gen)
    outs, grads = [], []
    for fn in (lambda *a: causal_conv1d_silu(*a, backend="numba"), causal_conv1d_silu_ref):
        leaves = [t.clone().requires_grad_() for t in (x, weight.view(3, taps), bias)]
        out = fn(*leaves)
        outs.append(out)
        grads.append(torch.autograd.grad(out, leaves, grad))
    np.testing.assert_allclose(outs[0].detach().numpy(), outs[1].detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, ref in zip(*grads):
        np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-11, atol=1e-11)


def test_numba_gradcheck_and_no_bias():
    x = torch.randn(1, 2, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: causal_conv1d_silu(*a, backend="numba"), (x, weight, bias))
    np.testing.assert_allclose(causal_conv1d_silu(x, weight, backend="numba").detach().numpy(),
                               causal_conv1d_silu_ref(x, weight, None).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_numba_lower_precision(dtype, rtol):
    x, weight, bias = torch.randn(2, 5, 300), torch.randn(5, 4), torch.randn(5)
    out = causal_conv1d_silu(x.to(dtype), weight.to(dtype), bias.to(dtype), backend="numba")
    assert out.dtype == dtype
    expected = causal_conv1d_silu_ref(*(t.to(dtype).double() for t in (x, weight, bias)))
    np.testing.assert_allclose(out.double().numpy(), expected.numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("call,match", [
    (lambda: causal_conv1d_silu(torch.zeros(2, 3), torch.zeros(3, 4)), r"x has shape \(2, 3\)"),
    (lambda: causal_conv1d_silu(torch.zeros(1, 2, 5), torch.zeros(3, 4)), r"weight \(3, 4\), expected"),
    (lambda: causal_conv1d_silu(torch.zeros(1, 2, 5, dtype=torch.int64), torch.zeros(2, 4), backend="numba"),
     r"backend='numba' does not take this input"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
