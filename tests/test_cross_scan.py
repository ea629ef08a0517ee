"""Cross-scan / merge against an independent index reference built with nested loops and np.ravel_multi_index, on
both CPU backends (numba, what ``auto`` runs on the CPU, and torch) and, under the Triton interpreter, Triton."""
import functools
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from medmamba.kernels import (
    ROUTES_2D,
    ROUTES_3D,
    PathRoute,
    Route,
    cross_merge,
    cross_merge_2d,
    cross_merge_3d,
    cross_rescan,
    cross_scan,
    cross_scan_2d,
    cross_scan_3d,
    cross_unscan,
    mhs_routes,
    route_positions,
)


def shuffled(spatial):
    """A test-defined permutation path: positions in a random order seeded by the shape."""
    return np.random.default_rng(int(np.prod(spatial))).permutation(int(np.prod(spatial)))


SHUFFLED = PathRoute(shuffled)


def route_indices(spatial, order, reverse):
    """Row-major x index of each step of the route: nested loops, order[0] outermost. Permutation routes: the
    test's own path, or a named pattern's positions (checked against hand-written orders in test_routes.py)."""
    if callable(order):
        steps = np.asarray(order(spatial))
        return steps[::-1].copy() if reverse else steps
    if isinstance(order, str):
        return route_positions(PathRoute(order, reverse), spatial)
    steps = []
    for loop_idx in itertools.product(*[range(spatial[a]) for a in order]):
        coord = [0] * len(spatial)
        for axis, i in zip(order, loop_idx):
            coord[axis] = i
        steps.append(np.ravel_multi_index(coord, spatial))
    steps = np.array(steps)
    return steps[::-1].copy() if reverse else steps


def scan_ref(x, routes):
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return np.stack([flat[:, :, route_indices(x.shape[2:], o, r)] for o, r in routes], 1)


def merge_ref(y, routes, spatial):
    b, _, c = y.shape[:3]
    y = y.reshape(b, len(routes), c, -1)
    out = np.zeros((b, c, int(np.prod(spatial))), dtype=y.dtype)
    for k, (o, r) in enumerate(routes):
        np.add.at(out, (slice(None), slice(None), route_indices(spatial, o, r)), y[:, k])
    return out


def rescan_ref(y, routes, spatial):
    b, _, c = y.shape[:3]
    y = y.reshape(b, len(routes), c, -1)
    return np.stack([y[:, k][..., route_indices(spatial, o, r)] for k, (o, r) in enumerate(routes)], 1)


def unscan_ref(y, routes, spatial):
    b, _, c = y.shape[:3]
    y = y.reshape(b, len(routes), c, -1)
    out = np.zeros_like(y)
    for k, (o, r) in enumerate(routes):
        out[:, k][..., route_indices(spatial, o, r)] = y[:, k]
    return out


CASES = [  # (spatial, routes)
    ((5, 7), ROUTES_2D),
    ((4, 4), ROUTES_2D),
    ((3, 5, 4), ROUTES_3D),
    ((5, 7), [ROUTES_2D[1], ROUTES_2D[2]]),
    ((3, 5, 4), [ROUTES_3D[4], ROUTES_3D[0]]),
    ((2, 3, 4), [Route((2, 1, 0), True), Route((0, 2, 1), False), Route((0, 2, 1), False)]),
    ((9,), [Route((0,), False), Route((0,), True)]),
    ((1, 6), ROUTES_2D),
    ((2, 3, 1, 2), [Route((3, 1, 0, 2), True), Route((0, 1, 2, 3), False)]),
    # permutation routes, alone and mixed with axis-order routes
    ((5, 7), [SHUFFLED, SHUFFLED._replace(reverse=True)]),
    ((4, 6), mhs_routes("C", 2) + mhs_routes("Z", 2)),
    ((3, 5, 4), mhs_routes("S", 3) + [ROUTES_3D[1]]),
    ((2, 3, 4), mhs_routes("X", 3)),
    ((9,), [SHUFFLED, Route((0,), True)]),
]


def ids(case):
    return f"{'x'.join(map(str, case[0]))}-K{len(case[1])}"


CPU_BACKENDS = ["numba", "torch"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spatial,routes", CASES, ids=[ids(c) for c in CASES])
def test_scan_merge_match_reference(spatial, routes, backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *spatial, dtype=torch.float64, generator=gen)
    y = torch.randn(2, len(routes), 3, *spatial, dtype=torch.float64, generator=gen)
    scanned = cross_scan(x, routes, backend=backend)
    assert scanned.shape == (2, len(routes), 3, int(np.prod(spatial)))
    np.testing.assert_array_equal(scanned.numpy(), scan_ref(x.numpy(), routes))
    merged = cross_merge(y, routes, backend=backend)
    np.testing.assert_allclose(merged.numpy(), merge_ref(y.numpy(), routes, spatial), rtol=1e-12, atol=1e-12)
    flat = cross_merge(y.flatten(3), routes, spatial_shape=spatial, backend=backend)
    np.testing.assert_array_equal(flat.numpy(), merged.numpy())
    # adjointness and round trip
    lhs = (scanned * y.flatten(3)).sum()
    rhs = (x.flatten(2) * merged).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)
    np.testing.assert_allclose(cross_merge(scanned, routes, spatial_shape=spatial, backend=backend).numpy(),
                               len(routes) * x.flatten(2).numpy(), rtol=1e-12)
    # unscan: every route back in row-major order, not summed
    unscanned = cross_unscan(y, routes, backend=backend)
    np.testing.assert_array_equal(unscanned.numpy(), unscan_ref(y.numpy(), routes, spatial))
    np.testing.assert_array_equal(cross_unscan(scanned, routes, spatial_shape=spatial, backend=backend).numpy(),
                                  x.flatten(2)[:, None].expand(-1, len(routes), -1, -1).numpy())
    # rescan: map k along route k, unscan's inverse
    rescanned = cross_rescan(y, routes, backend=backend)
    np.testing.assert_array_equal(rescanned.numpy(), rescan_ref(y.numpy(), routes, spatial))
    np.testing.assert_array_equal(cross_rescan(unscanned, routes, spatial_shape=spatial, backend=backend).numpy(),
                                  y.flatten(3).numpy())
    np.testing.assert_array_equal(
        cross_rescan(x[:, None].expand(-1, len(routes), *x.shape[1:]), routes, backend=backend).numpy(),
        scanned.numpy())


@pytest.mark.parametrize("spatial,routes", CASES, ids=[ids(c) for c in CASES])
def test_numba_scatters_in_visit_order(monkeypatch, spatial, routes):
    """Merge and unscan visiting each route's steps in position order within blocks (what rows with long strides
    get), forced here on every case with blocks of 5 steps: the reference's numbers."""
    from medmamba.kernels import cross_scan_numba

    monkeypatch.setattr(cross_scan_numba, "_TILE_STEPS", 5)
    monkeypatch.setattr(cross_scan_numba, "_TILE_STRIDE_BYTES", 0)
    monkeypatch.setattr(cross_scan_numba, "_VISIT", {})
    y = torch.randn(2, len(routes), 3, *spatial, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    merged = cross_merge(y, routes, backend="numba")
    np.testing.assert_allclose(merged.numpy(), merge_ref(y.numpy(), routes, spatial), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cross_unscan(y, routes, backend="numba").numpy(),
                                  unscan_ref(y.numpy(), routes, spatial))
    if int(np.prod(spatial)) > 1:
        assert all(order is not None for _, order in cross_scan_numba._VISIT.values())


def test_visit_order_only_for_long_strides():
    """Position-ordered scatters from a median step of 4 KiB through the row: 3D 32^3 float32 (the depth route
    steps 1024 values), not 16^3 nor 2D 64 x 64 (where the step order is faster)."""
    from medmamba.kernels.cross_scan_numba import visit_order
    from medmamba.kernels.routes import route_index_tensors

    def tiled(routes, spatial, itemsize=4):
        return visit_order(route_index_tensors(routes, spatial, "cpu", torch.int32)[0], itemsize) is not None

    assert tiled(ROUTES_3D, (32, 32, 32)) and tiled(ROUTES_3D, (16, 16, 16), itemsize=16)
    assert not tiled(ROUTES_3D, (16, 16, 16)) and not tiled(ROUTES_2D, (64, 64))
    steps, positions = visit_order(route_index_tensors(ROUTES_3D, (32, 32, 32), "cpu", torch.int32)[0], 4)
    for k in range(6):  # a permutation of the steps, sorted by position within blocks of 4096
        assert sorted(steps[k]) == list(range(32 ** 3))
        assert all(np.all(np.diff(positions[k, i:i + 4096]) > 0) for i in range(0, 32 ** 3, 4096))


GRAD_CASES = [CASES[0], CASES[2], CASES[5], CASES[9], CASES[11]]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("spatial,routes", GRAD_CASES, ids=[ids(c) for c in GRAD_CASES])
def test_gradients_match_reference(spatial, routes, backend):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
    g_scan = torch.randn(1, len(routes), 2, int(np.prod(spatial)), dtype=torch.float64, generator=gen)
    cross_scan(x, routes, backend=backend).backward(g_scan)
    np.testing.assert_allclose(x.grad.flatten(2).numpy(), merge_ref(g_scan.numpy(), routes, spatial), rtol=1e-12)

    y = torch.randn(1, len(routes), 2, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
    g_merge = torch.randn(1, 2, *spatial, dtype=torch.float64, generator=gen)
    cross_merge(y, routes, backend=backend).backward(g_merge.flatten(2))
    np.testing.assert_array_equal(y.grad.flatten(3).numpy(), scan_ref(g_merge.numpy(), routes))

    y.grad = None
    g_unscan = torch.randn(1, len(routes), 2, int(np.prod(spatial)), dtype=torch.float64, generator=gen)
    cross_unscan(y, routes, backend=backend).backward(g_unscan)
    expected = np.stack([scan_ref(g_unscan[:, k].reshape(1, 2, *spatial).numpy(), [r])[:, 0]
                         for k, r in enumerate(routes)], 1)
    np.testing.assert_array_equal(y.grad.flatten(3).numpy(), expected)

    y.grad = None
    g_rescan = torch.randn(1, len(routes), 2, int(np.prod(spatial)), dtype=torch.float64, generator=gen)
    cross_rescan(y, routes, backend=backend).backward(g_rescan)
    np.testing.assert_array_equal(y.grad.flatten(3).numpy(), unscan_ref(g_rescan.numpy(), routes, spatial))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("routes", [ROUTES_2D, mhs_routes("S", 2)], ids=["axis", "spiral"])
def test_gradcheck_cpu_backends(routes, backend):
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    for fn, t in ((cross_scan, x), (cross_merge, y), (cross_unscan, y), (cross_rescan, y)):
        call = functools.partial(fn, routes=routes, backend=backend)
        assert torch.autograd.gradcheck(call, (t,))
        assert torch.autograd.gradgradcheck(call, (t,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_numba_low_precision_and_channel_slices(dtype):
    """Other float dtypes go through float32 (exact for the copies; the merge sums in float32 in route order, as the
    reference, and rounds once); a channel slice, as a multi-head scan passes, is read like a contiguous copy."""
    routes = mhs_routes("X", 2) + [ROUTES_2D[1]]
    x = torch.randn(2, 6, 5, 7).to(dtype)
    y = torch.randn(2, 5, 3, 5, 7).to(dtype)
    scanned = cross_scan(x[:, 1:4], routes, backend="numba")
    assert scanned.dtype == dtype
    np.testing.assert_array_equal(scanned.float().numpy(), scan_ref(x[:, 1:4].float().numpy(), routes))
    merged = cross_merge(y, routes, backend="numba")
    assert merged.dtype == dtype
    expected = torch.from_numpy(merge_ref(y.float().numpy(), routes, (5, 7))).to(dtype)
    np.testing.assert_array_equal(merged.float().numpy(), expected.float().numpy())
    np.testing.assert_array_equal(cross_unscan(y, routes, backend="numba").float().numpy(),
                                  unscan_ref(y.float().numpy(), routes, (5, 7)))


def test_fixed_route_sets_and_wrappers():
    assert ROUTES_2D == [Route((0, 1), False), Route((1, 0), False), Route((0, 1), True), Route((1, 0), True)]
    assert ROUTES_3D == [Route(o, r) for r in (False, True) for o in ((0, 1, 2), (1, 2, 0), (2, 0, 1))]
    x2 = torch.randn(2, 3, 5, 7)
    y2 = torch.randn(2, 4, 3, 5, 7)
    np.testing.assert_array_equal(cross_scan_2d(x2).numpy(), scan_ref(x2.numpy(), ROUTES_2D))
    np.testing.assert_allclose(cross_merge_2d(y2).numpy(), merge_ref(y2.numpy(), ROUTES_2D, (5, 7)), atol=1e-5)
    x3 = torch.randn(1, 2, 3, 5, 4)
    y3 = torch.randn(1, 6, 2, 3, 5, 4)
    np.testing.assert_array_equal(cross_scan_3d(x3).numpy(), scan_ref(x3.numpy(), ROUTES_3D))
    np.testing.assert_allclose(cross_merge_3d(y3).numpy(), merge_ref(y3.numpy(), ROUTES_3D, (3, 5, 4)), atol=1e-5)
    # default routes follow the number of spatial axes; plain (order, reverse) tuples are accepted
    np.testing.assert_array_equal(cross_scan(x3).numpy(), cross_scan_3d(x3).numpy())
    np.testing.assert_array_equal(cross_scan(x2, [((1, 0), True)]).numpy(), cross_scan(x2, [ROUTES_2D[3]]).numpy())


@pytest.mark.parametrize("call,match", [
    (lambda: cross_scan(torch.zeros(2, 3)), r"x has shape \(2, 3\)"),
    (lambda: cross_scan_2d(torch.zeros(1, 2, 3, 4, 5)), r"x has shape \(1, 2, 3, 4, 5\), expected \(B, C, H, W\)"),
    (lambda: cross_scan_3d(torch.zeros(1, 2, 3, 4)), r"x has shape \(1, 2, 3, 4\), expected \(B, C, D, H, W\)"),
    (lambda: cross_merge_2d(torch.zeros(1, 4, 2, 12)), r"y has shape \(1, 4, 2, 12\), expected \(B, 4, C, H, W\)"),
    (lambda: cross_merge_3d(torch.zeros(1, 4, 2, 3, 4, 5)), r"y has shape \(1, 4, 2, 3, 4, 5\), dim 1 must equal"),
    (lambda: cross_merge(torch.zeros(1, 4, 2, 12), ROUTES_2D), r"y has shape \(1, 4, 2, 12\).*spatial_shape"),
    (lambda: cross_merge(torch.zeros(1, 4, 2, 12), ROUTES_2D, spatial_shape=(3, 5)), r"y has shape \(1, 4, 2, 12\)"),
    (lambda: cross_scan(torch.zeros(1, 2, 3, 4), [Route((0, 2), False)]), r"route order \(0, 2\)"),
    (lambda: cross_scan(torch.zeros(1, 2, 3, 4), []), r"routes is empty"),
    (lambda: cross_scan(torch.zeros(1, 2, 3, 4), backend="cuda"), r"backend='cuda'"),
    (lambda: cross_scan(torch.zeros(1, 2, 3, 4, dtype=torch.int64), backend="numba"),
     r"backend='numba' does not take this input \(a torch.int64 tensor"),
    (lambda: cross_scan(torch.zeros(1, 2, 3, 4), [PathRoute("hilbert")]), r"path 'hilbert' is neither"),
    (lambda: cross_unscan(torch.zeros(1, 4, 2, 12), mhs_routes("C", 2)), r"needs spatial_shape"),
    (lambda: cross_rescan(torch.zeros(1, 3, 2, 3, 4), ROUTES_2D), r"cross_rescan: y has shape .*dim 1 must equal"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


TRITON_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    sys.path.insert(0, {tests_dir!r})
    from test_cross_scan import CASES, merge_ref, scan_ref, unscan_ref
    from medmamba.kernels import ROUTES_3D, Route, cross_merge, cross_scan, cross_unscan, mhs_routes

    gen = torch.Generator().manual_seed(0)
    # more than one launch's worth of routes (12): the merge accumulates across launches
    many = ROUTES_3D + [Route((0, 2, 1), True), Route((2, 1, 0), False), Route((1, 0, 2), True),
                        Route((0, 1, 2), False), Route((2, 1, 0), True), Route((1, 0, 2), False)]
    cases = [c for c in CASES if len(c[0]) <= 3] + [((3, 2, 5), many), ((37, 70), [Route((1, 0), True)])]
    for spatial, routes in cases:
        x = torch.randn(1, 2, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
        y = torch.randn(1, len(routes), 2, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
        scanned = cross_scan(x, routes, backend="triton")
        np.testing.assert_array_equal(scanned.detach().numpy(), scan_ref(x.detach().numpy(), routes))
        merged = cross_merge(y, routes, backend="triton")
        np.testing.assert_allclose(merged.detach().numpy(), merge_ref(y.detach().numpy(), routes, spatial),
                                   rtol=1e-12, atol=1e-12)
        g_scan = torch.randn(scanned.shape, dtype=torch.float64, generator=gen)
        g_merge = torch.randn(merged.shape, dtype=torch.float64, generator=gen)
        scanned.backward(g_scan)
        merged.backward(g_merge)
        np.testing.assert_allclose(x.grad.flatten(2).numpy(), merge_ref(g_scan.numpy(), routes, spatial),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(y.grad.flatten(3).numpy(),
                                      scan_ref(g_merge.reshape(1, 2, *spatial).numpy(), routes))
        y.grad = None
        unscanned = cross_unscan(y, routes, backend="triton")
        np.testing.assert_array_equal(unscanned.detach().numpy(), unscan_ref(y.detach().numpy(), routes, spatial))
        g_unscan = torch.randn(unscanned.shape, dtype=torch.float64, generator=gen)
        unscanned.backward(g_unscan)
        np.testing.assert_array_equal(y.grad.flatten(3).numpy(), np.stack(
            [scan_ref(g_unscan[:, k].reshape(1, 2, *spatial).numpy(), [r])[:, 0] for k, r in enumerate(routes)], 1))
        print("ok", spatial, len(routes))
    # low precision: scan is a copy (exact); merge sums in fp32 and rounds once
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(1, 2, 5, 7, generator=gen).to(dtype)
        y = torch.randn(1, 6, 2, 3, 5, 4, generator=gen).to(dtype)
        assert cross_scan(x, backend="triton").dtype == dtype
        np.testing.assert_array_equal(cross_scan(x, backend="triton").float().numpy(),
                                      scan_ref(x.float().numpy(), [((0, 1), False), ((1, 0), False),
                                                                   ((0, 1), True), ((1, 0), True)]))
        merged = cross_merge(y, backend="triton")
        assert merged.dtype == dtype
        ref = merge_ref(y.double().numpy(), ROUTES_3D, (3, 5, 4))
        np.testing.assert_allclose(merged.double().numpy(), ref, rtol=torch.finfo(dtype).eps, atol=1e-6)
        y = torch.randn(1, len(many), 2, 3, 2, 5, generator=gen).to(dtype)  # two launches, one rounding
        np.testing.assert_allclose(cross_merge(y, many, backend="triton").double().numpy(),
                                   merge_ref(y.double().numpy(), many, (3, 2, 5)),
                                   rtol=torch.finfo(dtype).eps, atol=1e-6)
        print("ok", dtype)
    # strided rows: a channel slice (one MHS-VM head) and a route slice are read in place; a transposed map is copied
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, generator=gen)
    y = torch.randn(2, 5, 6, 35, dtype=torch.float64, generator=gen)
    routes = [((1, 0), True), ((0, 1), False)]
    for x_view in (x[:, 2:5], x.transpose(2, 3)):
        for r in (routes, mhs_routes("X", 2)):
            np.testing.assert_array_equal(cross_scan(x_view, r, backend="triton").numpy(),
                                          scan_ref(x_view.numpy(), r))
    y_view = y[:, 1:5:2, 1:4]
    np.testing.assert_allclose(cross_merge(y_view, routes, spatial_shape=(5, 7), backend="triton").numpy(),
                               merge_ref(y_view.numpy(), routes, (5, 7)), rtol=1e-12, atol=1e-12)
    # double backward: d/dg <scan^T g, v> = scan(v)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(1, 2, 2, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=gen)
    (gx,) = torch.autograd.grad(cross_scan(x, routes, backend="triton"), x, g, create_graph=True)
    (gg,) = torch.autograd.grad(gx, g, v)
    np.testing.assert_array_equal(gg.numpy(), scan_ref(v.numpy(), routes))
    print("ok strided")
""")


def test_triton_kernels_under_interpreter():
    """The Triton kernels, run on CPU by TRITON_INTERPRET=1 (the flag must be set before triton is imported)."""
    script = TRITON_SCRIPT.format(tests_dir=os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok") == len([c for c in CASES if len(c[0]) <= 3]) + 2 + 3 + 1


def test_triton_kernels_compile_for_hopper():
    """The interpreter accepts things the compiler rejects: compile both kernels for sm_90 (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from medmamba.kernels import cross_scan_triton as kernels

    for routes, tile, dtype in ((ROUTES_2D, (1, 64, 64), "fp32"), (ROUTES_3D, (16, 16, 16), "bf16")):
        code = sum(kernels._route_code(o, r) << (kernels._ROUTE_BITS * i) for i, (o, r) in enumerate(routes))
        constants = dict(ROUTES=code, K=len(routes), T0=tile[0], T1=tile[1], T2=tile[2], ACCUMULATE=True,
                         ACC_DTYPE=triton.language.float32)
        for kernel in (kernels._cross_scan_kernel, kernels._cross_merge_kernel):
            names = kernel.arg_names
            signature = {n: "constexpr" if n in constants else ("*" + dtype if n.endswith("_ptr") else "i32")
                         for n in names}
            source = ASTSource(fn=kernel, signature=signature,
                               constexprs={(names.index(n),): v for n, v in constants.items() if n in names})
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
            assert "st.global" in compiled.asm["ptx"]
    for kernel, constants in ((kernels._gather_kernel, dict(BLOCK=1024)),
                              (kernels._gather_sum_kernel, dict(BLOCK=1024, ACC_DTYPE=triton.language.float32))):
        names = kernel.arg_names
        signature = {n: "constexpr" if n in constants else
                     ("*i32" if n == "index_ptr" else "*bf16" if n.endswith("_ptr") else "i32") for n in names}
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(names.index(n),): v for n, v in constants.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        assert "st.global" in compiled.asm["ptx"]
