"""Build a registered segmentation net from nnU-Net plans (``architecture.arch_kwargs`` of a configuration).

``build_from_plans`` takes exactly what nnU-Net's (older) ``build_network_architecture`` receives;
``build_from_configuration`` takes the ``ConfigurationManager`` of nnU-Net 2.8's current signature.
The net follows the plan's per-stage features, strides (anisotropic ones included) and conv kernel sizes; with
deep supervision it returns ``n_stages - 1`` outputs at ``input / cumprod(strides)[:i + 1]``, and
``net.decoder.deep_supervision`` is the switch nnU-Net toggles.
"""
from __future__ import annotations

import inspect
import pydoc
from typing import Any

import torch.nn as nn

from medmamba.registry import create_model, model_entry

_CONV_DIMS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


def _spatial_dims(arch_kwargs: dict, req_import) -> int:
    conv_op = arch_kwargs.get("conv_op")
    if isinstance(conv_op, str) and "conv_op" in req_import:
        conv_op = pydoc.locate(conv_op)
    if conv_op in _CONV_DIMS:
        return _CONV_DIMS[conv_op]
    return len(arch_kwargs["strides"][0])


def plan_kwargs(arch_kwargs: dict, arch_kwargs_req_import=("conv_op",)) -> dict[str, Any]:
    """The plan's architecture as our builders' keyword arguments (all of them; builders take a subset)."""
    n_stages = int(arch_kwargs["n_stages"])
    kwargs = {
        "spatial_dims": _spatial_dims(arch_kwargs, arch_kwargs_req_import),
        "features": [int(f) for f in arch_kwargs["features_per_stage"]],
        "strides": [tuple(int(v) for v in s) for s in arch_kwargs["strides"]],
        "kernel_sizes": [tuple(int(v) for v in k) for k in arch_kwargs["kernel_sizes"]],
    }
    blocks = arch_kwargs.get("n_conv_per_stage", arch_kwargs.get("n_blocks_per_stage"))
    if blocks is not None:
        kwargs["n_conv_per_stage"] = [int(b) for b in blocks]
    if arch_kwargs.get("n_conv_per_stage_decoder") is not None:
        kwargs["n_conv_per_stage_decoder"] = [int(b) for b in arch_kwargs["n_conv_per_stage_decoder"]]
    for key in ("features", "strides", "kernel_sizes"):
        if len(kwargs[key]) != n_stages:
            raise ValueError(f"plans: {key} has {len(kwargs[key])} entries, n_stages is {n_stages}")
    return kwargs


def build_from_plans(
    model_name: str,
    arch_init_kwargs: dict,
    arch_init_kwargs_req_import,
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build ``model_name`` at the plan's configuration; ``overrides`` replace any builder argument.

    The deep-supervision heads are always built, so that a checkpoint trained with them loads into the net nnU-Net's
    predictor builds without; ``enable_deep_supervision`` sets the switch (``net.decoder.deep_supervision``).
    """
    entry = model_entry(model_name)
    if entry.task != "segmentation":
        raise ValueError(f"model {model_name!r} is a {entry.task} net; nnU-Net plans build segmentation nets")
    kwargs = plan_kwargs(arch_init_kwargs, arch_init_kwargs_req_import)
    spatial_dims = kwargs.pop("spatial_dims")
    accepted = inspect.signature(entry.builder).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    kwargs["deep_supervision"] = True
    kwargs.update(overrides)
    net = create_model(model_name, spatial_dims=spatial_dims, in_channels=num_input_channels,
                       out_channels=num_output_channels, **kwargs)
    net.decoder.deep_supervision = enable_deep_supervision and kwargs["deep_supervision"]
    return net


def build_from_configuration(model_name: str, configuration_manager, num_input_channels: int,
                             num_output_channels: int, enable_deep_supervision: bool = True,
                             **overrides: Any) -> nn.Module:
    """``build_from_plans`` for nnU-Net 2.8's ``build_network_architecture(plans_manager,
    configuration_manager, ...)`` signature; a builder that takes ``planned_patch_size`` gets the plan's patch."""
    if "planned_patch_size" in inspect.signature(model_entry(model_name).builder).parameters:
        overrides = {"planned_patch_size": tuple(int(p) for p in configuration_manager.patch_size), **overrides}
    return build_from_plans(
        model_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        enable_deep_supervision,
        **overrides,
    )
