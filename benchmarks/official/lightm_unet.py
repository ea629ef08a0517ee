"""MrBlankness/LightM-UNet: ``lightm-unet/nnunetv2/nets/LightMUNet.py``, built as its nnU-Net fork trains it:
``nnUNetTrainerLightMUNet.build_network_architecture`` (``training/nnUNetTrainer/nnUNetTrainerLightMUNet.py``)
from nnU-Net plans, with the fork's ``PlansManager``; ours by ``LightMUNetTrainer.build_network_architecture``
from the same plans (a 2d and a 3d_fullres plan), and by the ``paper`` preset at the paper's inputs: a 512 x 512
chest X-ray (Montgomery&Shenzhen, 2 classes) and a 128^3 CT crop (LiTS, 3 classes).

The trainer file is loaded on its own (``load_file``); its imports resolve to the installed stock nnU-Net, which has
the modules it names (``nnUNetTrainerNoDeepSupervision``, ``PolyLRScheduler``, ``get_tp_fp_fn_tn``), and, while it
loads, ``nnunetv2.nets.LightMUNet`` to the checkout's network file."""
from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from official import Case, Recipe, dataset_json, load_file, nnunet_plans

REPO = "MrBlankness/LightM-UNet"
FOLDER = "MrBlankness+LightM-UNet"
# Small plans as nnU-Net makes them (two input channels, three classes); the official builder uses only their
# dimensionality.
PLANS = {
    2: nnunet_plans("2d", (64, 64), [(1, 1)] + [(2, 2)] * 4, [(3, 3)] * 5, 32, 512, num_channels=2),
    3: nnunet_plans("3d_fullres", (16, 64, 64), [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)],
                    [(1, 3, 3)] + [(3, 3, 3)] * 3, 32, 256, num_channels=2),
}


def official_network(checkout: Path):
    """The checkout's ``nets/LightMUNet.py`` module."""
    return load_file(checkout / "lightm-unet" / "nnunetv2" / "nets" / "LightMUNet.py", "official_lightm_unet.nets")


def official_trainer(checkout: Path):
    """The checkout's ``nnUNetTrainerLightMUNet`` class, its ``nnunetv2.nets.LightMUNet`` import served by the
    checkout's file for the time it loads."""
    network = official_network(checkout)
    names = ("nnunetv2.nets", "nnunetv2.nets.LightMUNet")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(dict.fromkeys(names, network))
    try:
        path = checkout / "lightm-unet" / "nnunetv2" / "training" / "nnUNetTrainer" / "nnUNetTrainerLightMUNet.py"
        return load_file(path, "official_lightm_unet.trainer").nnUNetTrainerLightMUNet
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module


def from_plans(checkout: Path, plans: dict, dataset: dict) -> Callable[[], nn.Module]:
    """``nnUNetTrainerLightMUNet.build_network_architecture`` on ``plans``' only configuration."""

    def build() -> nn.Module:
        code = checkout / "lightm-unet" / "nnunetv2"
        fork = load_file(code / "utilities" / "plans_handling" / "plans_handler.py", "official_lightm_unet.plans")
        manager = fork.PlansManager(copy.deepcopy(plans))
        configuration = manager.get_configuration(next(iter(plans["configurations"])))
        return official_trainer(checkout).build_network_architecture(
            manager, dataset, configuration, len(dataset["channel_names"]), enable_deep_supervision=True)

    return build


def paper_network(checkout: Path, spatial_dims: int, num_classes: int) -> Callable[[], nn.Module]:
    """``LightMUNet`` with the arguments the official trainer passes."""

    def build() -> nn.Module:
        return official_network(checkout).LightMUNet(spatial_dims=spatial_dims, init_filters=32, in_channels=1,
                                                     out_channels=num_classes, blocks_down=[1, 2, 2, 4],
                                                     blocks_up=[1, 1, 1])

    return build


def cases(checkout: Path) -> list[Case]:
    found = []
    for dims, classes, shape, name in ((2, 2, (1, 1, 512, 512), "paper preset, 2D (Montgomery&Shenzhen, 512^2)"),
                                       (3, 3, (1, 1, 128, 128, 128), "paper preset, 3D (LiTS, 128^3)")):
        ours = {"create_model": {"preset": "paper", "spatial_dims": dims, "in_channels": 1, "num_classes": classes}}
        found.append(Case(name, ours, shape, paper_network(checkout, dims, classes)))
    for plans in PLANS.values():
        dataset = dataset_json(2, 3)
        (name, configuration), = plans["configurations"].items()
        ours = {"nnunet": {"trainer": "LightMUNetTrainer", "plans": plans, "configuration": name,
                           "dataset_json": dataset}}
        found.append(Case(f"nnU-Net {name} plan", ours, (2, 2, *configuration["patch_size"]),
                          from_plans(checkout, plans, dataset), key_fixture=True))
    return found


RECIPE = Recipe("lightm_unet", REPO, FOLDER, cases)
