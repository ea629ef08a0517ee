"""JiarunLiu/Swin-UMamba's Swin-UMamba: ``swin_umamba/nnunetv2/nets/SwinUMamba.py``, built by the repository's
``get_swin_umamba_from_plans`` with its fork's ``PlansManager`` (``use_pretrain=False``: the Scratch trainers'; the
pretrained one reads a VMamba checkpoint from disk, which changes the weights, not the network). The builder
takes only the input channels and classes from the plans, so the paper configuration at the paper's 2D input
(224 x 224: a 2d plan's patch, any multiple of 32 runs) is the builder on one plan, and ours the ``paper``
preset; from nnU-Net 2d plans, ours is ``SwinUMambaTrainer.build_network_architecture``. The official code is
2D only (Conv2d stem), so there is no 3d_fullres case. A small 2d plan gives the key fixture."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from official import Case, Recipe, dataset_json, load_file, nnunet_plans, quietly

REPO = "JiarunLiu/Swin-UMamba"
FOLDER = "JiarunLiu+Swin-UMamba"
PAPER_PLANS = nnunet_plans("2d", (224, 224), [(1, 1)] + [(2, 2)] * 5, [(3, 3)] * 6, 32, 512)
# a 2d plan as nnU-Net makes one for a non-square patch, two input channels and three classes
PLANS = nnunet_plans("2d", (96, 160), [(1, 1)] + [(2, 2)] * 5, [(3, 3)] * 6, 32, 512, num_channels=2)


def official_builder(checkout: Path, plans: dict, dataset: dict) -> Callable[[], nn.Module]:
    """``get_swin_umamba_from_plans`` of the checkout, on ``plans``' only configuration, deep supervision on."""

    def build() -> nn.Module:
        code = checkout / "swin_umamba" / "nnunetv2"
        fork = load_file(code / "utilities" / "plans_handling" / "plans_handler.py", "official_swin.plans_handler")
        nets = load_file(code / "nets" / "SwinUMamba.py", "official_swin.SwinUMamba")
        manager = fork.PlansManager(copy.deepcopy(plans))
        configuration = manager.get_configuration(next(iter(plans["configurations"])))
        return quietly(lambda: nets.get_swin_umamba_from_plans(manager, dataset, configuration,
                                                                len(dataset["channel_names"]),
                                                                deep_supervision=True, use_pretrain=False))

    return build


def cases(checkout: Path) -> list[Case]:
    paper_dataset, dataset = dataset_json(1, 2), dataset_json(2, 3)
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 1, "num_classes": 2,
                              "deep_supervision": True}}
    ours = {"nnunet": {"trainer": "SwinUMambaTrainer", "plans": PLANS, "configuration": "2d",
                       "dataset_json": dataset}}
    return [Case("paper configuration (224 x 224, 1 channel, 2 classes)", paper, (1, 1, 224, 224),
                 official_builder(checkout, PAPER_PLANS, paper_dataset)),
            Case("nnU-Net 2d plan (96 x 160, 2 channels, 3 classes)", ours, (2, 2, 96, 160),
                 official_builder(checkout, PLANS, dataset), key_fixture=True)]


RECIPE = Recipe("swin_umamba", REPO, FOLDER, cases)
