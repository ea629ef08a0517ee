"""MHS-VM's gated route fusion: the numba kernels (what "auto" runs on the CPU) against the paper's formula in
numpy float64 and against torch's autograd of the reference in torch ops."""
import numpy as np
import pytest
import torch

from medmamba.kernels import gated_route_fusion, gated_route_fusion_ref


def formula(ys: np.ndarray, threshold: float, eps: float = 1e-5) -> np.ndarray:
    cv = ys.std(axis=1, ddof=1) / ((ys - ys.min(axis=1, keepdims=True)).mean(axis=1) + eps)
    return ys.sum(axis=1) * np.clip(cv - threshold, 0, None)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("routes,threshold", [(2, 0.0), (3, 1.0), (4, 0.0), (4, 0.9)])
def test_forward_matches_formula(routes, threshold, backend):
    ys = torch.randn(2, routes, 3, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(routes))
    out = gated_route_fusion(ys, threshold, backend=backend)
    np.testing.assert_allclose(out.numpy(), formula(ys.numpy(), threshold), rtol=1e-12, atol=1e-12)
    if threshold:  # both sides of the ReLU are exercised
        assert (out == 0).any() and (out != 0).any()


@pytest.mark.parametrize("routes,threshold", [(2, 0.0), (4, 0.0), (4, 0.9)])
def test_numba_gradient_matches_torch_autograd(routes, threshold):
    gen = torch.Generator().manual_seed(7)
    ys = torch.randn(2, routes, 3, 41, dtype=torch.float64, generator=gen)
    grad = torch.randn(2, 3, 41, dtype=torch.float64, generator=gen)
    leaf_ref, leaf = ys.clone().requires_grad_(), ys.clone().requires_grad_()
    gated_route_fusion_ref(leaf_ref, threshold).backward(grad)
    gated_route_fusion(leaf, threshold, backend="numba").backward(grad)
    np.testing.assert_allclose(leaf.grad.numpy(), leaf_ref.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: gated_route_fusion(t, threshold, backend="numba"),
                                    (ys[:1, :, :2, :9].clone().requires_grad_(),))


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_numba_lower_precision(dtype, rtol):
    ys = torch.randn(1, 4, 5, 64, generator=torch.Generator().manual_seed(3))
    out = gated_route_fusion(ys.to(dtype), 0.0, backend="numba")
    assert out.dtype == dtype
    expected = formula(ys.to(dtype).double().numpy(), 0.0)
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_numba_gradient_where_routes_are_equal_or_tied():
    """All routes equal: cv = 0, no gate, the gradient is the (zero) gated sum's, finite (torch's autograd of the
    reference gives NaN through sqrt at 0). A tie for the minimum: its gradient goes to the first route holding it."""
    ys = torch.ones(1, 4, 1, 2, dtype=torch.float64, requires_grad=True)
    gated_route_fusion(ys, backend="numba").sum().backward()
    assert torch.equal(ys.grad, torch.zeros_like(ys))
    tied = torch.tensor([0.0, 0.0, 1.0, 3.0], dtype=torch.float64).view(1, 4, 1, 1).requires_grad_()
    gated_route_fusion(tied, backend="numba").sum().backward()
    total, mean, sd = 4.0, 1.0, float(np.std([0, 0, 1, 3], ddof=1))
    den = mean - 0.0 + 1e-5
    cv = sd / den
    expected = [cv + total * ((y - mean) / (3 * sd * den) - cv / den / 4) for y in (0.0, 0.0, 1.0, 3.0)]
    expected[0] += total * cv / den
    np.testing.assert_allclose(tied.grad.flatten().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: gated_route_fusion(torch.zeros(2, 3, 4)), r"ys has shape \(2, 3, 4\), expected \(B, R, C, L\)"),
    (lambda: gated_route_fusion(torch.zeros(1, 1, 2, 3)), r"with R >= 2 routes"),
    (lambda: gated_route_fusion(torch.zeros(1, 2, 2, 3), backend="triton"), r"backend='triton'"),
    (lambda: gated_route_fusion(torch.zeros(1, 2, 2, 3, dtype=torch.int64), backend="numba"),
     r"backend='numba' does not take this input"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
