"""Parameters and latency of the demo's networks, built from the demo dataset's own nnU-Net plans."""
from __future__ import annotations

import json

import torch


def plans_networks(demo) -> tuple[dict[str, torch.nn.Module], tuple[int, ...]]:
    """The network each demo trainer trains, built exactly as its trainer builds it."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(demo.nnunet["nnUNet_preprocessed"] / demo.dataset / "nnUNetPlans.json"))
    config = plans.get_configuration(demo.seg["configuration"])
    dataset_json = json.loads((demo.raw / "dataset.json").read_text(encoding="utf-8"))
    label_manager = plans.get_label_manager(dataset_json)
    n_in = determine_num_input_channels(plans, config, dataset_json)
    nets = {}
    for trainer in demo.seg["trainers"]:
        cls = recursive_find_trainer_class_by_name(trainer)
        nets[trainer] = cls.build_network_architecture(plans, config, n_in, label_manager.num_segmentation_heads,
                                                       False)
    return nets, (n_in, *config.patch_size)


def compare_plans_networks(demo) -> None:
    """Profile each demo trainer's network (``profile_model``: parameters, FLOPs, latency, peak memory) at batch 1
    and the plans' patch size on the demo's device, into ``<output_dir>/efficiency.json``."""
    from medmamba.evaluation.efficiency import profile_model

    nets, input_shape = plans_networks(demo)
    rows = {name: profile_model(net, (1, *input_shape), device=demo.cfg["device"])
            for name, net in nets.items()}
    (demo.out / "efficiency.json").write_text(json.dumps({"input_shape": [1, *input_shape], "networks": rows},
                                                         indent=2))
