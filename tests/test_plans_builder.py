"""Every segmentation net built from nnU-Net-style plans: strides, deep supervision and toggling as nnU-Net does."""
import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from medmamba.networks.plans import build_from_configuration, build_from_plans, plan_kwargs
from medmamba.nnunet_plugins import trainers
from medmamba.registry import list_models, model_entry

SEG_NETS = list_models(task="segmentation")
REQ_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def arch_kwargs(spatial_dims, features, strides, kernels, residual_encoder=False):
    """An ``architecture.arch_kwargs`` dict as nnU-Net 2.8 writes it (PlainConvUNet or ResidualEncoderUNet)."""
    n = len(features)
    kwargs = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{spatial_dims}d",
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
        ("n_blocks_per_stage" if residual_encoder else "n_conv_per_stage"):
            [1, 2, 2, 2][:n] if residual_encoder else [2] * n,
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{spatial_dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return kwargs


def nnunet_topology(spacing, patch_size):
    """Strides and kernels from nnU-Net's own planner function."""
    _, strides, kernels, patch, _ = get_pool_and_conv_props(spacing, patch_size, 4, 999999)
    return [tuple(s) for s in strides], [tuple(k) for k in kernels], tuple(int(p) for p in patch)


def _plans():
    s2, k2, p2 = nnunet_topology((1.0, 1.0), (48, 40))  # non-power-of-two 2d patch
    s3, k3, _ = nnunet_topology((3.0, 0.8, 0.8), (40, 56, 48))  # anisotropic 3d_fullres
    return {
        "2d": (arch_kwargs(2, (4, 8, 16, 32), s2, k2), p2),
        # the (40, 56, 48) plan run on a smaller patch its strides divide, to fit the CPU test budget
        # (test_full_size_anisotropic_patch runs the full patch)
        "3d_fullres_anisotropic": (arch_kwargs(3, (4, 8, 16, 32), s3, k3), (12, 24, 40)),
        "3d_fullres_resenc": (arch_kwargs(3, (4, 8, 16), [(1, 1, 1), (2, 2, 1), (2, 2, 2)],
                                          [(3, 3, 3)] * 3, residual_encoder=True), (16, 16, 12)),
    }


PLANS = _plans()


def test_examples_match_the_brief():
    # nnU-Net's planner gives the anisotropic topology (1, 2, 2) first for a (40, 56, 48) patch at 3 x 0.8 x 0.8 mm.
    kwargs, _ = PLANS["3d_fullres_anisotropic"]
    assert nnunet_topology((3.0, 0.8, 0.8), (40, 56, 48))[2] == (40, 56, 48)
    assert kwargs["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kwargs["kernel_sizes"][0] == [1, 3, 3]
    assert plan_kwargs(kwargs, REQ_IMPORT)["spatial_dims"] == 3


def test_full_size_anisotropic_patch():
    kwargs, _ = PLANS["3d_fullres_anisotropic"]
    patch = (40, 56, 48)
    net = build_from_plans("umamba_bot", kwargs, REQ_IMPORT, 1, 2, enable_deep_supervision=True)
    outputs = net(torch.randn(1, 1, *patch))
    assert [tuple(o.shape[2:]) for o in outputs] == [(40, 56, 48), (40, 28, 24), (20, 14, 12)]
    sum(o.mean() for o in outputs).backward()


@pytest.mark.parametrize("plan", sorted(PLANS))
@pytest.mark.parametrize("name", SEG_NETS)
def test_builds_from_plans_with_deep_supervision(name, plan):
    torch.manual_seed(0)
    kwargs, patch = PLANS[plan]
    entry_dims = 2 if plan == "2d" else 3
    if entry_dims not in model_entry(name).spatial_dims:
        pytest.skip(f"{name} has no {entry_dims}D variant (see its notes)")
    # small state / kernels keep the CPU cost down; everything the plan sets is left as planned; no stochastic depth
    # (two passes are compared)
    accepted = inspect.signature(model_entry(name).builder).parameters
    small = {k: v for k, v in (("d_state", 4), ("kernel_size", 3), ("drop_path_rate", 0.0)) if k in accepted}
    if "features" not in accepted:  # a net the plan does not shape (Swin-UMamba's) is built at its tiny preset
        small.update(model_entry(name).presets["tiny"])
    net = build_from_plans(name, kwargs, REQ_IMPORT, 2, 3, enable_deep_supervision=True, **small)
    x = torch.randn(1, 2, *patch)
    outputs = net(x)
    # the scales its trainer's loss and data loader downsample the targets to: nnU-Net's own (one per stage below
    # the first) unless the paper's trainer fixed them (Swin-UMamba's four, whatever the plan)
    trainer = getattr(trainers, model_entry(name).trainer)
    scales = trainer._get_deep_supervision_scales(SimpleNamespace(
        enable_deep_supervision=True,
        configuration_manager=SimpleNamespace(pool_op_kernel_sizes=kwargs["strides"], patch_size=list(patch))))
    assert isinstance(outputs, (list, tuple)) and len(outputs) == len(scales)
    if trainer._get_deep_supervision_scales is nnUNetTrainer._get_deep_supervision_scales:
        assert len(scales) == kwargs["n_stages"] - 1
    for out, scale in zip(outputs, scales):
        expected = tuple(int(round(p * s)) for p, s in zip(patch, scale))
        assert out.shape == (1, 3, *expected)
        assert torch.isfinite(out).all()
    sum(o.float().mean() for o in outputs).backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    # nnU-Net switches deep supervision off for validation / inference through net.decoder.deep_supervision
    nnUNetTrainer.set_deep_supervision_enabled(SimpleNamespace(is_ddp=False, network=net), False)
    with torch.no_grad():
        single = net(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, *patch)
    torch.testing.assert_close(single, outputs[0].detach())


def test_build_from_configuration_uses_the_configuration_manager():
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    kwargs, patch = PLANS["2d"]
    cm = ConfigurationManager({
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": kwargs,
            "_kw_requires_import": REQ_IMPORT,
        },
        "patch_size": list(patch),
    })
    net = build_from_configuration("vm_unet", cm, 1, 2, enable_deep_supervision=False)
    assert net(torch.randn(1, 1, *patch)).shape == (1, 2, *patch)
    assert net.decoder.deep_supervision is False


@pytest.mark.parametrize("name", ["vm_unet", "mhs_vm_unet", "umamba_bot"])
def test_plans_nets_always_carry_the_deep_supervision_heads(name):
    """nnU-Net trains with deep supervision and predicts with a net built without it: the same state dict keys,
    while a net built directly without deep supervision has no unused heads (as the papers' models)."""
    kwargs, patch = PLANS["2d"]
    with torch.device("meta"):
        trained = build_from_plans(name, kwargs, REQ_IMPORT, 1, 2, enable_deep_supervision=True)
        predicting = build_from_plans(name, kwargs, REQ_IMPORT, 1, 2, enable_deep_supervision=False)
    assert trained.state_dict().keys() == predicting.state_dict().keys()
    assert predicting.decoder.deep_supervision is False
    if name != "umamba_bot":  # U-Mamba, as nnU-Net's own nets, always builds its heads
        from medmamba import create_model

        lean = create_model(name, spatial_dims=2, features=(8, 16, 32), strides=(4, 2, 2), d_state=4)
        assert len(lean.decoder.heads) == 1
        lean.decoder.deep_supervision = True
        with pytest.raises(RuntimeError, match="built without its heads"):
            lean(torch.randn(1, 1, 32, 32))


def test_overrides_and_bad_plans():
    kwargs, _ = PLANS["2d"]
    net = build_from_plans("vm_unet", kwargs, REQ_IMPORT, 1, 2, depths=2)
    assert len(net.encoder[1].blocks) == 2
    bad = dict(kwargs, n_stages=5)
    with pytest.raises(ValueError, match="n_stages"):
        build_from_plans("vm_unet", bad, REQ_IMPORT, 1, 2)
    assert np.prod(kwargs["strides"], axis=0).tolist() == [8, 8]
