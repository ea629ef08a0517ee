"""Classification and restoration nets and their blocks: structure checked against independent references."""
import pytest
import torch

from medmamba.networks.blocks.rss import ChannelAttention, RSSBlock
from medmamba.networks.blocks.ss_conv_ssm import SSConvSSM, channel_shuffle
from medmamba.networks.nets.mambair import MambaIR
from medmamba.networks.nets.medmamba_cls import MedMambaClassifier
from medmamba.networks.nets.vim import VisionMamba


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small nets on a shared 2-core CI box: one intra-op thread avoids oversubscription (10x slower otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_channel_shuffle_matches_index_formula():
    x = torch.randn(2, 3, 5, 12)
    out = channel_shuffle(x, 2)
    half = 6
    for i in range(half):  # ShuffleNet: output channel 2*i + g is input channel g*half + i
        for g in range(2):
            torch.testing.assert_close(out[..., 2 * i + g], x[..., g * half + i], rtol=0, atol=0)
    with pytest.raises(ValueError, match="groups"):
        channel_shuffle(torch.randn(1, 2, 2, 5), 2)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_ss_conv_ssm_conv_half_is_local_and_ssm_half_global(spatial_dims):
    """After the shuffle, even channels come from the conv branch (first input half), odd ones from the SSM
    branch (second half). A point change in the first half moves even outputs only within the 5-voxel window of
    two 3x3 convs (plus the residual); a point change in the second half reaches odd outputs far away."""
    torch.manual_seed(0)
    dim, size = 8, 9
    block = SSConvSSM(dim, spatial_dims, d_state=4).eval()
    x = torch.randn(1, *(size,) * spatial_dims, dim)
    base = block(x)
    corner = (0,) * spatial_dims
    far = (size - 1,) * spatial_dims  # more than 2 voxels from the corner along every axis

    x1 = x.clone()
    x1[(0, *corner, 0)] += 1.0  # first half: conv branch
    d1 = (block(x1) - base).abs()
    assert d1[(0, *corner, 0)] > 0
    assert d1[(0, *far)][0::2].max() == 0  # conv half: local
    assert d1[(0, *far)][1::2].max() == 0  # SSM half does not see the first input half
    window = tuple(slice(3, None) for _ in range(spatial_dims))
    assert d1[(0, *window)].max() == 0

    # outside the conv window but 8 steps along the row-major route: over the far corner's hundreds of steps the
    # decays underflow in fp32, so "reaches far away" is checked where the scan, not the conv, must carry it
    along_route = (0,) * (spatial_dims - 1) + (size - 1,)
    assert d1[(0, *along_route)][0::2].max() == 0
    x2 = x.clone()
    x2[(0, *corner, dim // 2)] += 1.0  # second half: SSM branch
    d2 = (block(x2) - base).abs()
    assert d2[(0, *along_route)][1::2].max() > 0  # global
    assert d2[(0, *along_route)][0::2].max() == 0  # conv half does not see the second input half
    assert d2[(0, *far)][0::2].max() == 0


def test_channel_attention_matches_formula():
    torch.manual_seed(0)
    ca = ChannelAttention(2, 12, squeeze_factor=4).double()
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    w1, b1 = ca.gate[0].weight[:, :, 0, 0], ca.gate[0].bias
    w2, b2 = ca.gate[2].weight[:, :, 0, 0], ca.gate[2].bias
    pooled = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(ca(x), x * gate[:, :, None, None])


def test_rss_block_skip_scales_and_shape():
    torch.manual_seed(0)
    block = RSSBlock(8, 3, d_state=4, compress_ratio=2, squeeze_factor=4)
    x = torch.randn(1, 4, 5, 6, 8)
    assert block(x).shape == x.shape
    # With both branches silenced the block is x * s1 * s2.
    for p in (block.ssm.out_proj.weight, block.cab.body[2].weight, block.cab.body[2].bias):
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        block.skip_scale1.fill_(2.0)
        block.skip_scale2.fill_(0.5)
    # CAB with a zero second conv outputs 0 * gate = 0.
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 2, 12, 10)), (3, (1, 1, 6, 8, 4))])
def test_mambair_is_identity_plus_learned_residual(spatial_dims, shape):
    torch.manual_seed(0)
    net = MambaIR(spatial_dims, shape[1], embed_dim=8, depths=(1,), d_state=4, squeeze_factor=4)
    x = torch.randn(shape)
    y = net(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    torch.testing.assert_close(net(x), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out_channels"):
        MambaIR(spatial_dims, 1, out_channels=2)


def test_mambair_rgb_mean_shift_only_for_three_channels():
    """As the official code: a 3-channel image is shifted by DIV2K's RGB mean before the net and back after; other
    channel counts are not shifted. Same weights, so the shifted net is the plain one on x - mean, plus mean."""
    torch.manual_seed(0)
    kwargs = dict(embed_dim=8, depths=(1,), d_state=4, squeeze_factor=4)
    plain, shifted = MambaIR(2, 3, **kwargs), MambaIR(2, 3, rgb_mean_shift=True, **kwargs)
    shifted.load_state_dict(plain.state_dict())
    assert "input_mean" not in shifted.state_dict()  # not a weight: official checkpoints do not hold it
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 10, 12)
    torch.testing.assert_close(shifted(x), plain(x - mean) + mean)
    gray, gray_shifted = MambaIR(2, 1, **kwargs), MambaIR(2, 1, rgb_mean_shift=True, **kwargs)
    gray_shifted.load_state_dict(gray.state_dict())
    x = torch.rand(1, 1, 10, 12)
    torch.testing.assert_close(gray_shifted(x), gray(x), rtol=0, atol=0)


def test_vim_middle_cls_token_sees_both_ends():
    """The class token sits mid-sequence; with the bidirectional scan its features depend on the first and
    the last patch. A forward-only scan would make it blind to the patches after it."""
    torch.manual_seed(0)
    net = VisionMamba(2, 1, 3, img_size=32, patch_size=8, embed_dim=16, depth=1, d_state=4)
    x = torch.randn(1, 1, 32, 32, requires_grad=True)
    net.forward_features(x).sum().backward()
    g = x.grad[0, 0].abs()
    assert g[:8, :8].sum() > 0 and g[-8:, -8:].sum() > 0
    # The native grid uses the position embedding unchanged (in sequence order, the class token's row in the
    # middle, as hustvl/Vim's); a different grid interpolates the patches' rows and keeps the class token's.
    assert net(torch.randn(2, 1, 48, 24)).shape == (2, 3)
    assert net._pos_embed(net.grid) is net.pos_embed
    pos = net._pos_embed((6, 3))
    assert pos.shape == (1, 6 * 3 + 1, 16) and torch.equal(pos[:, 9], net.pos_embed[:, 8])


def test_medmamba_classifier_3d_and_widths():
    net = MedMambaClassifier(3, 2, 4, depths=(1, 1), dims=(8, 16), d_state=4)
    assert net(torch.randn(2, 2, 16, 8, 8)).shape == (2, 4)
    assert net.head.in_features == 16
    with pytest.raises(ValueError, match="one value per stage"):
        MedMambaClassifier(2, 1, 2, depths=(1, 1), dims=(8,))
