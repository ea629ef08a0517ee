"""Blocks against independent references: a float64 loop for the S6 recurrence, explicit index loops for scans
and patch ops, 2D-vs-3D equivalence for the dims-generic blocks."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from medmamba.kernels import mhs_routes, route_positions
from medmamba.networks.blocks import (
    SSND,
    GatedCNNBlock,
    MambaMixer,
    MultiHeadScan,
    PatchExpanding,
    PatchMerging,
    ScanRouteAttention,
    VSSBlock,
    default_routes,
)
from medmamba.networks.blocks.patch import depth_to_space, space_to_depth


def s6_loop(u, delta, A, B, C, D):
    """Float64 reference of the S6 recurrence for one sequence batch: u, delta (b, d, L), A (d, N), B/C (b, N, L)."""
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1)


def route_ssm_reference(ssm, xs):
    """RouteSSM computed route by route in float64 from its parameters."""
    xs = xs.double()
    out = []
    for k in range(xs.shape[1]):
        x = xs[:, k]
        dbl = torch.einsum("bdl,cd->bcl", x, ssm.x_proj_weight[k].double())
        dt, B, C = dbl.split([ssm.dt_rank, ssm.d_state, ssm.d_state], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, ssm.dt_projs_weight[k].double())
        dt = F.softplus(dt + ssm.dt_projs_bias[k].double()[None, :, None])
        d = ssm.d_inner
        A = -torch.exp(ssm.A_logs[k * d:(k + 1) * d].double())
        out.append(s6_loop(x, dt, A, B, C, ssm.Ds[k * d:(k + 1) * d].double()[None, :]))
    return torch.stack(out, 1)


def scan_reference(x, route):
    """Flatten (B, C, *S) along a route by gathering voxels in the route's axis order, one index at a time."""
    b, c, *spatial = x.shape
    idx = torch.arange(x[0, 0].numel()).reshape(spatial)
    seq = idx.permute(*route.order).flatten()
    if route.reverse:
        seq = seq.flip(0)
    return x.flatten(2)[:, :, seq]


def mixer_reference(mixer, x, spatial=None):
    """MambaMixer recomputed with explicit per-direction sequences and the float64 S6 loop."""
    b, length, _ = x.shape
    xz = mixer.in_proj(x).double()
    u, z = xz.chunk(2, -1)
    u = u.transpose(1, 2)
    if mixer.routes is not None:
        grid = u.reshape(b, -1, *spatial)
        seqs = [scan_reference(grid, r) for r in mixer.routes]
    else:
        seqs = [u, u.flip(-1)][: mixer.num_directions]
    d = mixer.d_inner
    w, bias = mixer.conv1d.weight.double(), mixer.conv1d.bias.double()
    convs = [
        F.silu(F.conv1d(s, w[k * d:(k + 1) * d], bias[k * d:(k + 1) * d], padding=w.shape[-1] - 1,
                        groups=d)[..., :length])
        for k, s in enumerate(seqs)
    ]
    ys = route_ssm_reference(mixer.ssm, torch.stack(convs, 1))
    merged = torch.zeros(b, d, length, dtype=torch.float64)
    for k in range(len(seqs)):
        if mixer.routes is not None:
            idx = scan_reference(torch.arange(length).reshape(1, 1, *spatial), mixer.routes[k])[0, 0]
            merged[:, :, idx] += ys[:, k]
        else:
            merged += ys[:, k] if k == 0 else ys[:, k].flip(-1)
    y = merged.transpose(1, 2) / (1 if mixer.sum_directions else len(seqs)) * F.silu(z)
    return F.linear(y, mixer.out_proj.weight.double())


@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True}])
def test_mamba_mixer_matches_float64_reference(kwargs):
    torch.manual_seed(0)
    mixer = MambaMixer(6, d_state=4, **kwargs)
    x = torch.randn(2, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x).double(), mixer_reference(mixer, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sum_directions", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_mamba_mixer_over_routes_matches_reference(dims, sum_directions):
    torch.manual_seed(0)
    spatial = (3, 4) if dims == 2 else (2, 3, 4)
    routes = default_routes(dims)[:3]
    mixer = MambaMixer(4, d_state=3, routes=routes, sum_directions=sum_directions)
    x = torch.randn(1, int(torch.tensor(spatial).prod()), 4)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, spatial).double(), mixer_reference(mixer, x, spatial), rtol=1e-4, atol=1e-5)


def test_forward_mamba_is_causal_and_bidirectional_is_not():
    torch.manual_seed(0)
    x = torch.randn(1, 10, 4)
    x2 = x.clone()
    x2[:, 7:] += 1.0
    with torch.no_grad():
        fwd = MambaMixer(4, d_state=4)
        torch.testing.assert_close(fwd(x)[:, :7], fwd(x2)[:, :7])
        bi = MambaMixer(4, d_state=4, bidirectional=True)
        assert not torch.allclose(bi(x)[:, :7], bi(x2)[:, :7])


@pytest.mark.parametrize("dims", [2, 3])
def test_ssnd_matches_route_by_route_reference(dims):
    torch.manual_seed(0)
    spatial = (3, 5) if dims == 2 else (2, 3, 4)
    block = SSND(4, dims, d_state=3, expand=1)
    x = torch.randn(2, *spatial, 4)
    with torch.no_grad():
        u, z = block.in_proj(x).double().chunk(2, -1)
        u = F.silu(block.conv.double()(u.movedim(-1, 1)))
        block.conv.float()
        seqs = torch.stack([scan_reference(u, r) for r in block.routes], 1)
        ys = route_ssm_reference(block.ssm, seqs)
        length = seqs.shape[-1]
        merged = torch.zeros(2, 4, length, dtype=torch.float64)
        for k, r in enumerate(block.routes):
            idx = scan_reference(torch.arange(length).reshape(1, 1, *spatial), r)[0, 0]
            merged[:, :, idx] += ys[:, k]
        y = F.layer_norm(merged.transpose(1, 2), (4,), block.out_norm.weight.double(), block.out_norm.bias.double())
        expected = F.linear(y.reshape(2, *spatial, 4) * F.silu(z), block.out_proj.weight.double())
        torch.testing.assert_close(block(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_scan_route_attention_formula():
    ys = torch.randn(2, 3, 4, 5)
    sra = ScanRouteAttention(threshold=0.1)
    y = ys.numpy()
    cv = y.std(axis=1, ddof=1) / ((y - y.min(axis=1, keepdims=True)).mean(axis=1) + 1e-5)
    expected = y.sum(axis=1) * (cv - 0.1).clip(min=0)
    torch.testing.assert_close(sra(ys), torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def gfu_reference(ys):
    """Gated fusion of route outputs (b, R, c, L) in float64, from the paper's formula."""
    std = ys.std(dim=1)  # unbiased, as torch.std
    shifted_mean = (ys - ys.min(dim=1, keepdim=True).values).mean(dim=1)
    return ys.sum(dim=1) * F.relu(std / (shifted_mean + 1e-5) - 0.3)


@pytest.mark.parametrize("spatial", [(3, 5), (2, 3, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("num_heads", [3, 4])
def test_multi_head_scan_matches_route_by_route_reference(spatial, num_heads):
    """Head i scans pattern i's four sequences (positions from route_positions, checked against hand-written
    orders in test_routes.py), each with its own S6 parameters, fused by the GFU; recomputed in float64 (the GFU's
    ratio amplifies float32 rounding, so the module runs in float64 too)."""
    torch.manual_seed(0)
    dims, dim = len(spatial), 2 * num_heads
    mhs = MultiHeadScan(dim, dims, num_heads=num_heads, d_state=3, gfu_t=0.3).double()
    assert list(mhs.head_ssms) == list("CXSZ"[:num_heads])
    x = torch.randn(2, *spatial, dim, dtype=torch.float64)
    with torch.no_grad():
        u, z = mhs.in_proj(x).chunk(2, -1)
        u = F.silu(mhs.conv(u.movedim(-1, 1))).flatten(2)
        heads = torch.einsum("bdl,cd->bcl", u, mhs.head_proj.weight.double()).split(mhs.head_dim, 1)
        fused = []
        for head, pattern in zip(heads, mhs.head_ssms):
            steps = [torch.tensor(route_positions(r, spatial)) for r in mhs_routes(pattern, dims)]
            ys = route_ssm_reference(mhs.head_ssms[pattern], torch.stack([head[:, :, s] for s in steps], 1))
            back = torch.zeros_like(ys)
            for k, s in enumerate(steps):
                back[:, k][:, :, s] = ys[:, k]
            fused.append(gfu_reference(back))
        y = torch.cat(fused, 1).transpose(1, 2)
        y = F.layer_norm(y, y.shape[-1:], mhs.cat_norm.weight.double(), mhs.cat_norm.bias.double())
        y = F.layer_norm(F.linear(y, mhs.out_proj.weight.double()), (dim,), mhs.out_norm.weight.double(),
                         mhs.out_norm.bias.double())
        expected = y.reshape(2, *spatial, dim) * F.silu(z)
        torch.testing.assert_close(mhs(x), expected, rtol=1e-9, atol=1e-10)
    x.requires_grad_(True)
    mhs(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="num_heads must be 3"):
        MultiHeadScan(12, dims, num_heads=2)


@pytest.mark.parametrize("stride", [(2, 2), (1, 2, 2), (2, 1, 3)])
def test_space_to_depth_matches_index_loop(stride):
    spatial = tuple(2 * s * (i + 1) for i, s in enumerate(stride))
    x = torch.randn(2, *spatial, 3)
    y = space_to_depth(x, stride)
    # reference: output voxel o gathers input voxels o * stride + offset, the first axis' offset varying fastest
    offsets = [tuple(reversed(d)) for d in itertools.product(*[range(s) for s in reversed(stride)])]
    for o in [tuple(0 for _ in stride), tuple(v // s - 1 for v, s in zip(spatial, stride))]:
        expected = torch.cat([x[(slice(None), *(oi * s + di for oi, s, di in zip(o, stride, d)))] for d in offsets], -1)
        torch.testing.assert_close(y[(slice(None), *o)], expected)
    # depth_to_space (patch expanding) reads the sub-positions in row-major order, as VMamba's
    # rearrange('b h w (p1 p2 c) -> b (h p1) (w p2) c')
    up = depth_to_space(y, stride)
    c = y.shape[-1] // len(offsets)
    for j, d in enumerate(itertools.product(*[range(s) for s in stride])):
        o = tuple(0 for _ in stride)
        torch.testing.assert_close(up[(slice(None), *(oi * s + di for oi, s, di in zip(o, stride, d)))],
                                   y[(slice(None), *o)][..., j * c:(j + 1) * c])


def test_merging_expanding_shapes_anisotropic():
    x = torch.randn(1, 3, 8, 6, 5)
    m = PatchMerging(3, 5, 7, (1, 2, 2))(x)
    assert m.shape == (1, 3, 4, 3, 7)
    assert PatchExpanding(3, 7, 5, (1, 2, 2))(m).shape == x.shape


def _copy_2d_into_3d(block2, block3):
    """Give a 3D block the weights of a 2D one: its depthwise kernel's middle depth slice, zeros elsewhere."""
    sd2 = block2.state_dict()
    sd3 = block3.state_dict()
    for key, value in sd2.items():
        if sd3[key].shape != value.shape:
            w = torch.zeros_like(sd3[key])
            w[:, :, w.shape[2] // 2] = value
            value = w
        sd3[key] = value
    block3.load_state_dict(sd3)


@pytest.mark.parametrize("make", [lambda d: GatedCNNBlock(8, d, kernel_size=3),
                                  lambda d: VSSBlock(8, d, d_state=4, routes=default_routes(d)[:1])])
def test_3d_block_on_a_single_slice_equals_2d_block(make):
    torch.manual_seed(0)
    b2, b3 = make(2), make(3)
    _copy_2d_into_3d(b2, b3)
    x = torch.randn(2, 5, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(b3(x[:, None])[:, 0], b2(x), rtol=1e-4, atol=1e-5)
