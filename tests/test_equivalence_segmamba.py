"""SegMamba against ge-xing/SegMamba, without its code: the tri-orientated Mamba layer against the shim's
``Mamba(bimamba_type="v3")`` (the fork's formula: forward, reversed and slice-interleaved scans summed), the official
key names landing where the official modules use them (tests/data/official_keys/segmamba.json), the same parameter
count, and the harness's recorded output comparison (benchmarks/results/equivalence.json)."""
import json
from pathlib import Path

import pytest
import torch
from helpers import official_state_dict
from official import build_ours

from medmamba.compat.modules import Mamba
from medmamba.networks.blocks.mamba import MambaLayer
from medmamba.networks.nets.segmamba import checkpoint_filter, tri_orientated_routes
from medmamba.weights import convert_state_dict

ROOT = Path(__file__).resolve().parents[1]

FIXTURE = json.loads((ROOT / "tests" / "data" / "official_keys" / "segmamba.json").read_text(encoding="utf-8"))
RESULTS = json.loads((ROOT / "benchmarks" / "results" / "equivalence.json").read_text(encoding="utf-8"))

# Official name -> ours, written out by hand from the two codes (the small case: 4 Mamba stages, depths 1, 2, 1, 1).
BY_HAND = {
    "vit.downsample_layers.0.0.weight": "encoder.1.body.down.weight",
    "vit.downsample_layers.3.1.bias": "encoder.4.body.down.conv.bias",
    "vit.gscs.0.proj.weight": "encoder.1.body.gsc.spatial.0.0.weight",
    "vit.gscs.1.proj2.bias": "encoder.2.body.gsc.spatial.1.0.bias",
    "vit.gscs.2.proj3.weight": "encoder.3.body.gsc.pointwise.0.weight",
    "vit.gscs.3.proj4.weight": "encoder.4.body.gsc.out.0.weight",
    "vit.stages.1.1.norm.weight": "encoder.2.body.layers.1.norm.weight",
    "vit.stages.1.1.mamba.in_proj.weight": "encoder.2.body.layers.1.mixer.in_proj.weight",
    "vit.stages.3.0.mamba.out_proj.weight": "encoder.4.body.layers.0.mixer.out_proj.weight",
    "vit.mlps.2.fc2.weight": "encoder.3.refine.mlp.fc2.weight",
    "encoder1.layer.conv3.conv.weight": "encoder.0.refine.conv3.conv.weight",
    "encoder5.layer.conv2.conv.weight": "encoder.4.refine.block.conv2.conv.weight",
    "decoder5.transp_conv.conv.weight": "decoder.ups.3.weight",
    "decoder5.conv_block.conv1.conv.weight": "decoder.stages.3.conv1.conv.weight",
    "decoder2.conv_block.conv3.conv.weight": "decoder.stages.0.0.conv3.conv.weight",
    "decoder1.layer.conv2.conv.weight": "decoder.stages.0.1.conv2.conv.weight",
    "out.conv.conv.weight": "decoder.heads.0.weight",
    "out.conv.conv.bias": "decoder.heads.0.bias",
}
# The three directions stacked into one per-route tensor, in our routes' order (forward, reverse, inter-slice).
STACKED = {"conv1d{}.weight": "conv1d.weight", "x_proj{}.weight": "ssm.x_proj_weight",
           "dt_proj{}.bias": "ssm.dt_projs_bias", "A{}_log": "ssm.A_logs", "D{}": "ssm.Ds"}


@pytest.fixture(scope="module")
def converted():
    (case,) = FIXTURE["cases"].values()
    official = official_state_dict(case)
    with torch.device("meta"):
        ours = build_ours("segmamba", case["ours"])
    return case, official, ours, convert_state_dict("segmamba", official, ours)


def test_every_tensor_loads_and_none_is_left_over(converted):
    _, _, _, report = converted
    assert report.complete and not report.unused, report.summary()


def test_tensors_land_where_the_official_modules_use_them(converted):
    _, official, _, report = converted
    for theirs, mine in BY_HAND.items():
        assert torch.equal(report.state_dict[mine], official[theirs]), (theirs, mine)
    for theirs, mine in STACKED.items():
        stacked = report.state_dict[f"encoder.2.body.layers.1.mixer.{mine}"]
        for k, suffix in enumerate(("", "_b", "_s")):
            part = official[f"vit.stages.1.1.mamba.{theirs.format(suffix)}"]
            rows = stacked[k] if stacked.shape[0] == 3 else stacked[k * len(part):(k + 1) * len(part)]
            assert torch.equal(rows, part), (theirs, suffix)


def test_same_parameter_count_as_the_official_network(converted):
    case, _, ours, _ = converted
    assert sum(p.numel() for p in ours.parameters()) == sum(torch.Size(s).numel() for s in case["keys"].values())


@pytest.mark.parametrize("shape", [(4, 3, 5), (2, 6, 1)])
def test_tri_orientated_layer_is_the_forks_bimamba_v3(shape):
    """With nslices = the first axis's size the fork's slice-interleaved scan is our inter-slice route."""
    torch.manual_seed(0)
    dim = 8
    official = Mamba(dim, d_state=4, bimamba_type="v3", nslices=shape[0])
    with torch.no_grad():
        for p in official.parameters():
            p.add_(0.2 * torch.randn_like(p))
    layer = MambaLayer(dim, d_state=4, routes=tri_orientated_routes(3), sum_directions=True)
    state = {f"vit.stages.0.0.mamba.{k}": v for k, v in official.state_dict().items()}
    prefix = "encoder.1.body.layers.0.mixer."
    mixer = {k[len(prefix):]: v for k, v in checkpoint_filter(state, None).items()}
    layer.mixer.load_state_dict(mixer)
    x = torch.randn(2, dim, *shape)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        expected = x + official(layer.norm(tokens)).transpose(1, 2).reshape(x.shape)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_harness_recorded_a_match_at_the_papers_input():
    record = RESULTS["segmamba"]
    assert record["repository"] == FIXTURE["repository"] and record["commit"] == FIXTURE["commit"]
    assert record["verdict"] == "match" and record["max_rel_diff"] <= record["tolerance"] == 1e-4
    cases = {c["name"]: c for c in record["cases"]}
    paper = next(c for name, c in cases.items() if name.startswith("paper configuration"))
    assert paper["configuration"]["preset"] == "paper" and paper["input_shape"] == [1, 4, 128, 128, 128]
    for case in cases.values():
        assert case["verdict"] == "match" and case["coverage"]["loaded"] == case["coverage"]["ours"]
