"""bowang-lab/U-Mamba's U-Mamba_Bot: ``umamba/nnunetv2/nets/UMambaBot_{2d,3d}.py``, built from nnU-Net plans by the
repository's own ``get_umamba_bot_{2d,3d}_from_plans`` with its fork's ``ConfigurationManager``; ours by
``UMambaBotTrainer.build_network_architecture`` from the same plans, and by the ``paper`` preset for nnU-Net's
128^3 3d_fullres plan."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from official import Case, Recipe, dataset_json, load_file, nnunet_plans, quietly

REPO = "bowang-lab/U-Mamba"
FOLDER = "bowang-lab+U-Mamba"
# nnU-Net's 3d_fullres plan for a 128^3 patch: the 'paper' preset.
PAPER_PLANS = nnunet_plans("3d_fullres", (128, 128, 128), [(1, 1, 1)] + [(2, 2, 2)] * 5, [(3, 3, 3)] * 6, 32, 320)
# Small plans as nnU-Net makes them: anisotropic 3D (4 stages, 32-256 features), 2D (5 stages, 32-512); two input
# channels, three classes. At these patches U-Mamba_Enc scans channel tokens at the deepest stage.
PLANS = {
    2: nnunet_plans("2d", (64, 64), [(1, 1)] + [(2, 2)] * 4, [(3, 3)] * 5, 32, 512, num_channels=2),
    3: nnunet_plans("3d_fullres", (16, 64, 64), [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)],
                    [(1, 3, 3)] + [(3, 3, 3)] * 3, 32, 256, num_channels=2),
}


def official_builder(checkout: Path, kind: str, dims: int, plans: dict, dataset: dict) -> Callable[[], nn.Module]:
    """``get_umamba_<kind>_<dims>d_from_plans`` of the checkout, on ``plans``' only configuration."""

    def build() -> nn.Module:
        code = checkout / "umamba" / "nnunetv2"
        fork = load_file(code / "utilities" / "plans_handling" / "plans_handler.py", "official_umamba.plans_handler")
        nets = load_file(code / "nets" / f"UMamba{kind}_{dims}d.py", f"official_umamba.UMamba{kind}_{dims}d")
        manager = fork.PlansManager(copy.deepcopy(plans))
        configuration = manager.get_configuration(next(iter(plans["configurations"])))
        from_plans = getattr(nets, f"get_umamba_{kind.lower()}_{dims}d_from_plans")
        return quietly(lambda: from_plans(manager, dataset, configuration, len(dataset["channel_names"]),
                                          deep_supervision=True))

    return build


def umamba_cases(checkout: Path, kind: str) -> list[Case]:
    """The paper preset at 128^3, and our trainer against the official builder on a 2d and a 3d_fullres plan."""
    paper_dataset = dataset_json(1, 2)
    ours = {"create_model": {"preset": "paper", "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
                             "deep_supervision": True}}
    cases = [Case("paper preset, nnU-Net 3d_fullres plan at 128^3", ours, (1, 1, 128, 128, 128),
                  official_builder(checkout, kind, 3, PAPER_PLANS, paper_dataset))]
    for dims, plans in PLANS.items():
        dataset = dataset_json(2, 3)
        (name, configuration), = plans["configurations"].items()
        ours = {"nnunet": {"trainer": f"UMamba{kind}Trainer", "plans": plans, "configuration": name,
                           "dataset_json": dataset}}
        cases.append(Case(f"nnU-Net {name} plan", ours, (2, 2, *configuration["patch_size"]),
                          official_builder(checkout, kind, dims, plans, dataset), key_fixture=True))
    return cases


RECIPE = Recipe("umamba_bot", REPO, FOLDER, lambda checkout: umamba_cases(checkout, "Bot"))
