"""U-Mamba (umamba_bot, umamba_enc) against bowang-lab/U-Mamba, without its code: the official key names and shapes
recorded from it (tests/data/official_keys), the tensors landing where the official modules use them, the same
parameter count from the same plans, and the harness's recorded output comparison
(benchmarks/results/equivalence.json)."""
import json
from pathlib import Path

import pytest
import torch
from helpers import official_state_dict
from official import build_ours

from medmamba.weights import convert_state_dict

ROOT = Path(__file__).resolve().parents[1]

FIXTURES = {e: json.loads((ROOT / "tests" / "data" / "official_keys" / f"{e}.json").read_text(encoding="utf-8"))
            for e in ("umamba_bot", "umamba_enc")}
RESULTS = json.loads((ROOT / "benchmarks" / "results" / "equivalence.json").read_text(encoding="utf-8"))

# Official name -> ours, written out by hand from the two codes. Both plans: stem and stages with BasicResBlock
# (conv1/norm1/conv2/norm2/conv3) then BasicBlockD (conv1.conv, ... also under all_modules); the official decoder
# counts its stages from the bottom, ours by resolution.
COMMON = {
    "encoder.stem.0.conv1.weight": "encoder.0.stem.0.conv1.0.weight",
    "encoder.stem.0.norm1.bias": "encoder.0.stem.0.conv1.1.bias",
    "encoder.stem.0.norm2.weight": "encoder.0.stem.0.conv2.1.weight",
    "encoder.stem.0.conv3.weight": "encoder.0.stem.0.skip.weight",
    "encoder.stem.1.conv1.conv.weight": "encoder.0.stem.1.conv1.0.weight",
    "encoder.stem.1.conv2.all_modules.1.weight": "encoder.0.stem.1.conv2.1.weight",
    "encoder.stages.0.0.conv3.bias": "encoder.0.blocks.0.skip.bias",
    "decoder.encoder.stages.1.1.conv1.norm.weight": "encoder.1.blocks.1.conv1.1.weight",
    "encoder.stages.2.0.conv1.bias": "encoder.2.blocks.0.conv1.0.bias",
    "decoder.upsample_layers.0.conv.weight": "decoder.ups.{deepest}.conv.weight",
    "decoder.stages.0.0.conv3.weight": "decoder.stages.{deepest}.0.skip.weight",
    "decoder.stages.0.1.conv2.conv.bias": "decoder.stages.{deepest}.1.conv2.0.bias",
    "decoder.seg_layers.0.bias": "decoder.heads.{deepest}.bias",
    "decoder.seg_layers.{deepest}.weight": "decoder.heads.0.weight",
    "decoder.stages.{deepest}.0.conv1.weight": "decoder.stages.0.0.conv1.0.weight",
}
MAMBA = {
    "umamba_bot": {
        "mamba_layer.norm.weight": "encoder.{last}.mamba.norm.weight",
        "mamba_layer.mamba.in_proj.weight": "encoder.{last}.mamba.mixer.in_proj.weight",
        "mamba_layer.mamba.x_proj.weight": "encoder.{last}.mamba.mixer.ssm.x_proj_weight",
        "mamba_layer.mamba.dt_proj.bias": "encoder.{last}.mamba.mixer.ssm.dt_projs_bias",
        "mamba_layer.mamba.A_log": "encoder.{last}.mamba.mixer.ssm.A_logs",
        "mamba_layer.mamba.D": "encoder.{last}.mamba.mixer.ssm.Ds",
    },
    "umamba_enc": {
        "encoder.mamba_layers.{last}.norm.bias": "encoder.{last}.mamba.norm.bias",
        "decoder.encoder.mamba_layers.{last}.mamba.conv1d.weight": "encoder.{last}.mamba.mixer.conv1d.weight",
        "encoder.mamba_layers.0.mamba.dt_proj.weight": "encoder.0.mamba.mixer.ssm.dt_projs_weight",
        "encoder.mamba_layers.0.mamba.out_proj.weight": "encoder.0.mamba.mixer.out_proj.weight",
    },
}
CASES = [(entry, name) for entry, fixture in FIXTURES.items() for name in fixture["cases"]]


@pytest.fixture(scope="module", params=CASES, ids=[f"{e}-{n}" for e, n in CASES])
def converted(request):
    entry, name = request.param
    case = FIXTURES[entry]["cases"][name]
    official = official_state_dict(case)
    with torch.device("meta"):
        ours = build_ours(entry, case["ours"])
    return entry, case, official, ours, convert_state_dict(entry, official, ours)


def test_every_tensor_loads_and_none_is_left_over(converted):
    _, _, _, _, report = converted
    assert report.complete and not report.unused, report.summary()


def test_tensors_land_where_the_official_modules_use_them(converted):
    entry, _, official, ours, report = converted
    stages = len(ours.encoder)
    names = {"deepest": stages - 2, "last": stages - 1}
    for theirs, mine in {**COMMON, **MAMBA[entry]}.items():
        theirs, mine = theirs.format(**names), mine.format(**names)
        assert torch.equal(report.state_dict[mine].flatten(), official[theirs].flatten()), (theirs, mine)


def test_same_parameter_count_as_the_official_network(converted):
    _, case, _, ours, _ = converted
    aliases = {name for names in case["aliases"] for name in names[1:]}
    official = sum(torch.Size(shape).numel() for name, shape in case["keys"].items() if name not in aliases)
    assert sum(p.numel() for p in ours.parameters()) == official


def test_2d_decoder_leaves_out_the_full_resolution_skip(converted):
    entry, case, _, ours, _ = converted
    features = [stage.blocks[0].conv1[0].out_channels for stage in ours.encoder]
    inputs = [stage[0].conv1[0].in_channels for stage in ours.decoder.stages]
    full_resolution = features[0] if len(case["keys"]["encoder.stem.0.conv1.weight"]) == 4 else 2 * features[0]
    assert inputs == [full_resolution] + [2 * f for f in features[1:-1]]


@pytest.mark.parametrize("entry", sorted(FIXTURES))
def test_harness_recorded_a_match_on_the_paper_preset_and_both_plans(entry):
    record = RESULTS[entry]
    assert record["repository"] == FIXTURES[entry]["repository"] and record["commit"] == FIXTURES[entry]["commit"]
    assert record["verdict"] == "match" and record["max_rel_diff"] <= record["tolerance"] == 1e-4
    cases = {c["name"]: c for c in record["cases"]}
    assert {"nnU-Net 2d plan", "nnU-Net 3d_fullres plan"} <= set(cases)
    paper = next(c for name, c in cases.items() if name.startswith("paper preset"))
    assert paper["configuration"]["preset"] == "paper" and paper["input_shape"] == [1, 1, 128, 128, 128]
    for case in cases.values():
        assert case["verdict"] == "match" and case["coverage"]["loaded"] == case["coverage"]["ours"]
        plans = case["configuration"].get("nnunet_plans")
        stages = len(plans["pool_op_kernel_sizes"]) if plans else 6  # the paper preset: 6 stages
        assert len(case["outputs"]) == stages - 1  # deep supervision: every decoder stage compared


def test_mamba_layer_runs_in_float32_under_autocast_and_on_the_meta_device():
    from medmamba.networks.nets.umamba import UMambaLayer

    torch.manual_seed(0)
    layer = UMambaLayer(8, d_state=4).eval()
    x = torch.randn(1, 8, 4, 4, 4).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    with torch.no_grad():
        expected = layer(x.float())
    assert y.dtype == torch.float32 and torch.equal(y, expected)
    with torch.device("meta"):  # FLOPs are counted on the meta device
        assert UMambaLayer(64, channel_tokens=True)(torch.empty(1, 8, 4, 4, 4)).shape == (1, 8, 4, 4, 4)
