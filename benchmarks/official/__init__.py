"""Recipes for ``benchmarks/equivalence.py``: how to build each entry's official model from a checkout of its
public repository, and ours at the same configuration.

One module per entry, ``benchmarks/official/<entry>.py``, defines ``RECIPE = Recipe(...)``: the repository, its
folder name under ``--official-root``, and ``cases(checkout)``, the configurations to compare. A case's ``ours``
says how our side is built, as JSON (it is recorded in the results and in the key fixtures, which the tests rebuild
without the official code):

- ``{"create_model": {"preset": ..., "spatial_dims": ..., "in_channels": ..., "num_classes": ..., ...}}``: the
  registry's builder with these arguments;
- ``{"nnunet": {"trainer": ..., "plans": ..., "configuration": ..., "dataset_json": ...}}``: our nnU-Net trainer's
  ``build_network_architecture`` from these plans (deep supervision on), as stock nnU-Net builds it.

The official code runs with ``medmamba.compat.install_mamba_ssm(force=True)``; what it needs besides (timm,
einops, ...) is not a medmamba dependency.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


def as_outputs(output: Any) -> list[torch.Tensor]:
    """A model's output as a list: deep-supervision outputs (highest resolution first) or the single output."""
    return list(output) if isinstance(output, (list, tuple)) else [output]


@dataclass
class Case:
    """One comparison: the official model built by ``build_official``, ours as ``ours`` says, fed ``input_shape``."""

    name: str
    ours: dict[str, Any]
    input_shape: tuple[int, ...]
    build_official: Callable[[], nn.Module]
    official_outputs: Callable[[Any], list[torch.Tensor]] = as_outputs  # post-processing (e.g. a sigmoid)
    key_fixture: bool = False  # its official key names and shapes go to tests/data/official_keys/<entry>.json


@dataclass
class Recipe:
    entry: str
    repo: str  # owner/name on GitHub
    folder: str  # the checkout's folder name under --official-root
    cases: Callable[[Path], list[Case]] | None
    not_runnable: str | None = None  # why the official code cannot be run at all (then ``cases`` is None)


def load_recipe(entry: str) -> Recipe:
    return importlib.import_module(f"{__name__}.{entry}").RECIPE


def recipe_names() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))


def load_file(path: Path, module_name: str):
    """Import one official source file as ``module_name`` (keeps the installed packages its imports name, e.g.
    stock nnunetv2, where putting the repository on sys.path would shadow them with its fork)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the checkout")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def quietly(build: Callable[[], nn.Module]) -> nn.Module:
    """Run an official builder with its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return build()


def nnunet_plans(configuration_name: str, patch_size, strides, kernel_sizes, base_features: int, max_features: int,
                 n_conv: int = 2, num_channels: int = 1) -> dict[str, Any]:
    """A plans dict with one configuration in the format nnU-Net v2 wrote before its ``architecture`` section
    (2.2, which the papers' forks are): stock nnU-Net reads it too, converting it on load."""
    dims, n = len(patch_size), len(strides)
    configuration = {
        "data_identifier": f"nnUNetPlans_{configuration_name}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(patch_size), "median_image_size_in_voxels": [2 * p for p in patch_size],
        "spacing": [1.0] * dims, "normalization_schemes": ["ZScoreNormalization"] * num_channels,
        "use_mask_for_norm": [False] * num_channels, "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": base_features, "n_conv_per_stage_encoder": [n_conv] * n,
        "n_conv_per_stage_decoder": [n_conv] * (n - 1), "num_pool_per_axis": [n - 1] * dims,
        "pool_op_kernel_sizes": [list(s) for s in strides], "conv_kernel_sizes": [list(k) for k in kernel_sizes],
        "unet_max_num_features": max_features, "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape", "resampling_fn_data_kwargs": {},
        "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {}, "batch_dice": dims == 3,
    }
    return {
        "dataset_name": "Dataset999_Equivalence", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0] * 3, "original_median_shape_after_transp": [64] * 3,
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {configuration_name: configuration}, "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                     "percentile_99_5": 1.0, "std": 1.0} for c in range(num_channels)},
    }


def dataset_json(num_channels: int, num_classes: int) -> dict[str, Any]:
    """An nnU-Net dataset.json with ``num_channels`` inputs and ``num_classes`` labels (background included)."""
    return {"channel_names": {str(c): f"channel{c}" for c in range(num_channels)},
            "labels": {"background": 0, **{f"class{i}": i for i in range(1, num_classes)}},
            "numTraining": 1, "file_ending": ".nii.gz"}


def build_ours(entry: str, ours: dict[str, Any]) -> nn.Module:
    """Our model as a case's ``ours`` describes it (see the module docstring)."""
    if "create_model" in ours:
        from medmamba import create_model

        return create_model(entry, **ours["create_model"])
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medmamba.nnunet_plugins import trainers

    spec = ours["nnunet"]
    plans = PlansManager(copy.deepcopy(spec["plans"]))
    configuration = plans.get_configuration(spec["configuration"])
    num_outputs = plans.get_label_manager(spec["dataset_json"]).num_segmentation_heads
    num_inputs = len(spec["dataset_json"]["channel_names"])
    trainer = getattr(trainers, spec["trainer"])
    return trainer.build_network_architecture(plans, configuration, num_inputs, num_outputs, True)


def describe(ours: dict[str, Any]) -> dict[str, Any]:
    """The configuration a case ran at, short enough for the results file."""
    if "create_model" in ours:
        return dict(ours["create_model"])
    spec = ours["nnunet"]
    configuration = spec["plans"]["configurations"][spec["configuration"]]
    keys = ("patch_size", "UNet_base_num_features", "unet_max_num_features", "pool_op_kernel_sizes",
            "conv_kernel_sizes", "n_conv_per_stage_encoder", "n_conv_per_stage_decoder")
    return {"trainer": spec["trainer"], "nnunet_plans": {k: configuration[k] for k in keys if k in configuration},
            "num_input_channels": len(spec["dataset_json"]["channel_names"]),
            "num_classes": len(spec["dataset_json"]["labels"])}
