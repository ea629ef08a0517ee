"""Every registered segmentation net: forward/backward in every dims it claims, paper presets' sizes."""
import pytest
import torch

from medmamba.registry import create_model, list_models, model_entry

SEG_NETS = list_models(task="segmentation")
CASES = [(name, dims) for name in SEG_NETS for dims in model_entry(name).spatial_dims]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_segmentation_nets_are_registered():
    expected = {"vm_unet", "mhs_vm_unet", "umamba_bot", "umamba_enc", "segmamba", "lightm_unet", "mambaout_unet",
                "swin_umamba"}
    assert expected <= set(SEG_NETS)
    for name in SEG_NETS:
        entry = model_entry(name)
        assert entry.paper.arxiv and entry.code_url.startswith("https://")
        assert "tiny" in entry.presets
        if set(entry.spatial_dims) != {2, 3}:
            assert entry.notes, f"{name} must say why it lacks a dims"


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_backward_small(name, dims):
    torch.manual_seed(0)
    size = (32, 24) if dims == 2 else (16, 16, 12)
    net = create_model(name, spatial_dims=dims, in_channels=2, num_classes=3, preset="tiny")
    x = torch.randn(2, 2, *size)
    out = net(x)
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
    out.square().mean().backward()
    # without deep supervision only the lower-resolution heads stay unused
    unused = {n for n, p in net.named_parameters() if p.grad is None}
    assert all(n.startswith("decoder.heads.") and not n.startswith("decoder.heads.0.") for n in unused), unused
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", SEG_NETS)
def test_input_not_divisible_by_total_stride(name):
    dims = model_entry(name).spatial_dims[0]
    size = (30, 26) if dims == 2 else (14, 10, 18)
    net = create_model(name, spatial_dims=dims, in_channels=1, num_classes=2, preset="tiny", deep_supervision=True)
    with torch.no_grad():
        outputs = net(torch.randn(1, 1, *size))
    assert outputs[0].shape == (1, 2, *size)
    assert all(torch.isfinite(o).all() for o in outputs)


PAPER = [n for n in SEG_NETS if model_entry(n).paper_params_m is not None]


@pytest.mark.parametrize("name", PAPER)
def test_paper_preset_matches_paper_parameter_count(name):
    entry = model_entry(name)
    channels, *spatial = entry.reference_input[entry.spatial_dims[0]]
    net = create_model(name, spatial_dims=len(spatial), in_channels=channels, preset="paper",
                       num_classes=entry.presets["paper"].get("out_channels", 2))
    measured = n_params(net) / 1e6
    assert abs(measured - entry.paper_params_m) <= 0.05 * entry.paper_params_m, (measured, entry.paper_params_m)


def test_vssm_filter_accepts_the_vmunet_wrapper_prefix():
    """Official VM-UNet / MHS-VM checkpoints are saved from VMUNet, which holds the VSSM as ``vmunet``."""
    import json
    from pathlib import Path

    from medmamba.weights import convert_state_dict

    root = Path(__file__).resolve().parents[1]
    from official import build_ours

    fixture = json.loads((root / "tests" / "data" / "official_keys" / "vm_unet.json").read_text(encoding="utf-8"))
    (case,) = fixture["cases"].values()
    official = {f"vmunet.{k}": torch.randn(shape) for k, shape in case["keys"].items()}
    with torch.device("meta"):
        ours = build_ours("vm_unet", case["ours"])
    report = convert_state_dict("vm_unet", official, ours)
    assert report.complete and not report.unused, report.summary()
