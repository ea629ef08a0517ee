"""Rebuild a trained network from the manifest, without importing the trainer that trained it.

Two builders: ``nnunet`` (nnU-Net's ``get_network_from_plans``, for trainers that keep nnU-Net's
``build_network_architecture``) and ``medmamba`` (``medmamba.networks.plans.build_from_plans`` for trainers that
declare a ``network_name`` class attribute). The spec is chosen at export time from the trainer class.
"""
from __future__ import annotations

from medmamba.errors import MedMambaError


def network_spec(trainer_class, configuration_manager, num_input_channels: int, num_output_channels: int) -> dict:
    """The manifest's ``network`` entry for a trainer class (resolved at export time)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    common = {
        "arch_init_kwargs": configuration_manager.network_arch_init_kwargs,
        "arch_init_kwargs_req_import": list(configuration_manager.network_arch_init_kwargs_req_import),
        "num_input_channels": num_input_channels,
        "num_output_channels": num_output_channels,
    }
    model_name = getattr(trainer_class, "network_name", None)
    if model_name:
        return {"builder": "medmamba", "name": model_name, **common}
    if trainer_class.build_network_architecture is nnUNetTrainer.build_network_architecture:
        return {"builder": "nnunet", "name": configuration_manager.network_arch_class_name, **common}
    raise MedMambaError(
        f"{trainer_class.__name__}: builds its own network but declares no network_name, so it cannot be exported")


def build_network(spec: dict):
    """The network described by a manifest ``network`` entry, in inference mode (no deep supervision)."""
    args = (spec["name"], spec["arch_init_kwargs"], spec["arch_init_kwargs_req_import"],
            spec["num_input_channels"], spec["num_output_channels"])
    if spec["builder"] == "nnunet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        return get_network_from_plans(*args, allow_init=False, deep_supervision=False)
    if spec["builder"] == "medmamba":
        from medmamba.networks.plans import build_from_plans

        return build_from_plans(*args, enable_deep_supervision=False)
    raise MedMambaError(f"unknown network builder {spec['builder']!r}")
