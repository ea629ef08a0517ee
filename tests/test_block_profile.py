"""benchmarks/block_profile.py: operators land in their categories, FLOPs in theirs, and a block is captured at the
input the network gives it."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import block_profile  # noqa: E402

from medmamba.networks.blocks.ssnd import VSSBlock  # noqa: E402


@pytest.mark.parametrize("op, category", [
    ("medmamba::selective_scan", "selective scan"),
    ("GeneratedBackwardFor_medmamba_selective_scan_defaultBackward", "selective scan"),
    ("medmamba::selective_scan_backward", "selective scan"),
    ("medmamba::route_pass", "cross-scan/merge"),
    ("aten::bmm", "projections"),
    ("aten::addmm", "projections"),
    ("aten::mkldnn_convolution", "convolution"),
    ("aten::convolution_backward", "convolution"),
    ("aten::native_layer_norm_backward", "normalization"),
    ("aten::copy_", "copies"),
    ("aten::silu", "other"),
])
def test_operator_categories(op, category):
    assert block_profile._category(op) == category


def test_profile_block_splits_a_vss_block():
    torch.manual_seed(0)
    block = VSSBlock(16, 2, d_state=4).eval()
    result = block_profile.profile_block(block, torch.randn(1, 8, 8, 16), repeats=1)
    for label in ("forward", "forward_backward"):
        cats = result[label]["categories"]
        assert sum(c["share"] for c in cats.values()) == pytest.approx(1, abs=1e-3)
        for name in ("selective scan", "cross-scan/merge", "projections", "convolution"):
            assert cats[name]["ms"] > 0, (label, name)
        assert cats["selective scan"]["flops"] > 0 and cats["projections"]["flops"] > 0


def test_first_block_input_is_what_the_network_feeds_it():
    block, x = block_profile.first_block_input("vm_unet", 2)
    assert isinstance(block, VSSBlock)
    assert x.shape == (1, 64, 64, 96)  # 256^2 input, patch 4, embed 96 (VM-UNet's paper preset)
