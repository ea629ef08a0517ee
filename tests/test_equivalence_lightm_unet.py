"""LightM-UNet against MrBlankness/LightM-UNet, without its code: the RVM layer against the official ``MambaLayer``'s
formula on the shim's ``Mamba``, the official key names landing where the official modules use them
(tests/data/official_keys/lightm_unet.json: its nnU-Net trainer's network from a 2d and a 3d_fullres plan), our
trainer building that network whatever the plan, and the harness's recorded output comparison
(benchmarks/results/equivalence.json)."""
import json
from pathlib import Path

import pytest
import torch
from helpers import official_state_dict
from official import build_ours

from medmamba.compat.modules import Mamba
from medmamba.networks.blocks.mamba import MAMBA_SSM_NAMES, ResidualVisionMambaLayer
from medmamba.weights import convert_state_dict

ROOT = Path(__file__).resolve().parents[1]

FIXTURE = json.loads((ROOT / "tests" / "data" / "official_keys" / "lightm_unet.json").read_text(encoding="utf-8"))
RESULTS = json.loads((ROOT / "benchmarks" / "results" / "equivalence.json").read_text(encoding="utf-8"))

# Official name -> ours, written out by hand from the two codes (blocks_down 1, 2, 2, 4; blocks_up 1, 1, 1).
BY_HAND = {
    "convInit.0.conv.weight": "encoder.0.stem.0.weight",
    "convInit.1.conv.weight": "encoder.0.stem.1.weight",
    "down_layers.0.1.norm1.weight": "encoder.0.blocks.0.norm1.weight",
    "down_layers.0.1.conv2.skip_scale": "encoder.0.blocks.0.rvm2.skip_scale",
    "down_layers.1.0.0.norm.bias": "encoder.1.rvm.norm.bias",
    "down_layers.1.0.0.proj.weight": "encoder.1.rvm.proj.weight",
    "down_layers.2.2.conv1.mamba.in_proj.weight": "encoder.2.blocks.1.rvm1.mixer.in_proj.weight",
    "down_layers.3.4.norm2.bias": "encoder.3.blocks.3.norm2.bias",
    "down_layers.3.4.conv2.proj.bias": "encoder.3.blocks.3.rvm2.proj.bias",
    "up_samples.0.0.conv.weight": "decoder.ups.2.0.weight",
    "up_samples.2.0.conv.weight": "decoder.ups.0.0.weight",
    "up_layers.0.0.skip_scale": "decoder.stages.2.0.skip_scale",
    "up_layers.2.0.conv.0.conv.weight": "decoder.stages.0.0.conv.0.weight",
    "up_layers.1.0.norm2.weight": "decoder.stages.1.0.norm2.weight",
    "conv_final.0.weight": "decoder.heads.0.0.weight",
    "conv_final.2.0.conv.bias": "decoder.heads.0.2.0.bias",
    "conv_final.2.1.conv.weight": "decoder.heads.0.2.1.weight",
}
CASES = sorted(FIXTURE["cases"])


@pytest.fixture(scope="module", params=CASES)
def converted(request):
    case = FIXTURE["cases"][request.param]
    official = official_state_dict(case)
    with torch.device("meta"):
        ours = build_ours("lightm_unet", case["ours"])
    return case, official, ours, convert_state_dict("lightm_unet", official, ours)


def test_every_tensor_loads_and_none_is_left_over(converted):
    _, _, _, report = converted
    assert report.complete and not report.unused, report.summary()


def test_tensors_land_where_the_official_modules_use_them(converted):
    _, official, _, report = converted
    for theirs, mine in BY_HAND.items():
        assert torch.equal(report.state_dict[mine], official[theirs]), (theirs, mine)
    assert torch.equal(report.state_dict["encoder.1.rvm.mixer.ssm.x_proj_weight"][0],
                       official["down_layers.1.0.0.mamba.x_proj.weight"])


def test_trainer_builds_the_official_network_whatever_the_plan(converted):
    """The plans differ in stages (5 in 2d, 4 in 3d_fullres) and features; the official trainer's network does
    not: 32..256 features, three 2x poolings, no deep supervision, about 5.0M parameters."""
    case, _, ours, _ = converted
    assert sum(p.numel() for p in ours.parameters()) == sum(torch.Size(s).numel() for s in case["keys"].values())
    assert len(ours.encoder) == 4 and ours.strides[1:] == [(2,) * len(ours.strides[0])] * 3
    assert len(ours.decoder.heads) == 1 and ours.decoder.deep_supervision is False
    assert 4.9e6 < sum(p.numel() for p in ours.parameters()) < 5.1e6


def test_rvm_layer_is_the_official_formula():
    """proj(norm(mamba(norm(x)) + s * x)) over the voxels, one LayerNorm used twice (the official MambaLayer)."""
    torch.manual_seed(0)
    mamba = Mamba(8, d_state=4)
    layer = ResidualVisionMambaLayer(8, 12, d_state=4)
    with torch.no_grad():
        for p in [*mamba.parameters(), *layer.parameters()]:
            p.add_(0.2 * torch.randn_like(p))
    for name, tensor in mamba.state_dict().items():
        ours, transform = MAMBA_SSM_NAMES[name]
        layer.mixer.get_parameter(ours).data.copy_(tensor if transform is None else transform(tensor))
    x = torch.randn(2, 8, 3, 4, 5)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        mixed = mamba(layer.norm(tokens)) + layer.skip_scale * tokens
        expected = layer.proj(layer.norm(mixed)).transpose(1, 2).reshape(2, 12, 3, 4, 5)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_harness_recorded_a_match_at_the_papers_inputs_and_from_both_plans():
    record = RESULTS["lightm_unet"]
    assert record["repository"] == FIXTURE["repository"] and record["commit"] == FIXTURE["commit"]
    assert record["verdict"] == "match" and record["max_rel_diff"] <= record["tolerance"] == 1e-4
    cases = {c["name"]: c for c in record["cases"]}
    assert {"nnU-Net 2d plan", "nnU-Net 3d_fullres plan"} <= set(cases)
    shapes = sorted(c["input_shape"] for name, c in cases.items() if name.startswith("paper preset"))
    assert shapes == [[1, 1, 128, 128, 128], [1, 1, 512, 512]]
    for case in cases.values():
        assert case["verdict"] == "match" and case["coverage"]["loaded"] == case["coverage"]["ours"]
