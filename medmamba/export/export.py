"""Export an nnU-Net results folder (``DatasetXXX_Name/Trainer__Plans__Configuration``) to a model package."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from medmamba._version import __version__
from medmamba.errors import MedMambaError
from medmamba.export.network import build_network, network_spec
from medmamba.export.package import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    channel_entries,
    fold_member,
    label_entries,
    parse_fold,
    sha256,
    state_dict_to_safetensors,
)
from medmamba.io_utils import atomic_file, check_output_file


def load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, read with ``weights_only=True`` (numpy scalars in its training log allowed)."""
    import numpy as np
    import torch

    numpy_types = [np._core.multiarray.scalar, np.dtype, *(getattr(np.dtypes, n) for n in np.dtypes.__all__)]
    try:
        with torch.serialization.safe_globals(numpy_types):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle refusals and corrupt files alike)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedMambaError(f"{path}: cannot be read as a weights-only checkpoint ({first_line})") from None


def find_trainer_class(trainer_name: str):
    """The trainer class: medmamba's own trainers first, then nnU-Net's search (nnunetv2 and ``nnUNet_extTrainer``)."""
    import contextlib
    import importlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        found = getattr(importlib.import_module("medmamba.nnunet_plugins.trainers"), trainer_name, None)
    except ModuleNotFoundError as err:
        if err.name != "medmamba.nnunet_plugins.trainers":
            raise
        found = None
    if found is not None:
        return found
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return recursive_find_trainer_class_by_name(trainer_name)
    except RuntimeError:
        raise MedMambaError(f"trainer {trainer_name}: not found in medmamba.nnunet_plugins, nnunetv2 "
                            f"or nnUNet_extTrainer") from None


def _fold_folders(results: Path, checkpoint: str, folds: list | None) -> list:
    if folds is None:
        folds = sorted(int(p.name[5:]) for p in results.glob("fold_*")
                       if p.name[5:].isdigit() and (p / checkpoint).is_file())
        if not folds:
            raise MedMambaError(f"{results}: no fold_*/{checkpoint} (no trained fold to export)")
        return folds
    for fold in folds:
        if not (results / f"fold_{fold}" / checkpoint).is_file():
            raise MedMambaError(f"{results / f'fold_{fold}' / checkpoint}: missing (fold {fold} not trained?)")
    return folds


def _json_object(path: Path, data: bytes) -> dict:
    try:
        content = json.loads(data.decode("utf-8"))
    except ValueError as err:
        raise MedMambaError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(content, dict):
        raise MedMambaError(f"{path}: expected a JSON object")
    return content


def export_results(results: str | Path, output: str | Path, folds: list | None = None,
                   checkpoint: str = "checkpoint_final.pth", overwrite: bool = False) -> dict:
    """Write the model package for ``results`` to ``output`` (atomically); every input is checked first.

    Args:
        results: ``DatasetXXX_Name/Trainer__Plans__Configuration``.
        output: the package to write (.zip).
        folds: the folds to include (default: every fold with ``checkpoint``).
        checkpoint: the checkpoint file name in each fold.
        overwrite: replace an existing ``output``.

    Returns:
        The package's manifest.
    """
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    results = Path(results)
    if not results.is_dir():
        raise MedMambaError(f"{results}: not a folder")
    parts = results.name.split("__")
    if len(parts) != 3:
        raise MedMambaError(f"{results}: expected a results folder named Trainer__Plans__Configuration")
    trainer_name, plans_name, configuration = parts
    for name in ("plans.json", "dataset.json"):
        if not (results / name).is_file():
            raise MedMambaError(f"{results / name}: missing")
    folds = _fold_folders(results, checkpoint, None if folds is None else [parse_fold(f) for f in folds])
    check_output_file(output, overwrite)

    plans_bytes, dataset_bytes = (results / "plans.json").read_bytes(), (results / "dataset.json").read_bytes()
    plans, dataset_json = _json_object(results / "plans.json", plans_bytes), _json_object(results / "dataset.json",
                                                                                          dataset_bytes)
    if configuration not in (plans.get("configurations") or {}):
        raise MedMambaError(f"{results / 'plans.json'}: has no configuration {configuration!r}")
    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        label_manager = plans_manager.get_label_manager(dataset_json)
        num_inputs = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError, RuntimeError) as err:
        raise MedMambaError(f"{results}: plans.json and dataset.json do not describe {configuration!r} "
                            f"({type(err).__name__}: {err})") from None

    checkpoints = {}
    for fold in folds:
        path = results / f"fold_{fold}" / checkpoint
        ckpt = load_checkpoint(path)
        init_args = ckpt.get("init_args") if isinstance(ckpt, dict) else None
        if not isinstance(init_args, dict) or not isinstance(ckpt.get("network_weights"), dict):
            raise MedMambaError(f"{path}: not an nnU-Net checkpoint (no network_weights / init_args)")
        if ckpt.get("trainer_name") != trainer_name or init_args.get("configuration") != configuration:
            raise MedMambaError(f"{path}: trained with {ckpt.get('trainer_name')}/{init_args.get('configuration')},"
                                f" not {trainer_name}/{configuration}")
        checkpoints[fold] = ckpt

    trainer_class = find_trainer_class(trainer_name)
    spec = network_spec(trainer_class, configuration_manager, num_inputs, label_manager.num_segmentation_heads)
    _check_spec_rebuilds(spec, trainer_class, plans_manager, configuration_manager, checkpoints)
    mirroring = checkpoints[folds[0]].get("inference_allowed_mirroring_axes")

    members = {"plans.json": plans_bytes, "dataset.json": dataset_bytes}
    for fold, ckpt in checkpoints.items():
        members[fold_member(fold)] = state_dict_to_safetensors(ckpt["network_weights"])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medmamba_version": __version__,
        "dataset": results.parent.name,
        "trainer": trainer_name,
        "plans": plans_name,
        "configuration": configuration,
        "checkpoint": checkpoint,
        "folds": folds,
        "network": spec,
        "inference_allowed_mirroring_axes": None if mirroring is None else [int(a) for a in mirroring],
        "channels": channel_entries(dataset_json),
        "labels": label_entries(dataset_json, label_manager),
        "file_ending": dataset_json["file_ending"],
        "files": {name: sha256(data) for name, data in members.items()},
    }
    with atomic_file(output, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _check_spec_rebuilds(spec, trainer_class, plans_manager, configuration_manager, checkpoints) -> None:
    """The manifest's network must be the trainer's network: same class and parameter names and shapes,
    and every fold's weights must load into it strictly."""
    rebuilt = build_network(spec)
    reference = trainer_class.build_network_architecture(
        plans_manager, configuration_manager, spec["num_input_channels"], spec["num_output_channels"],
        enable_deep_supervision=False)
    shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if type(rebuilt) is not type(reference) or shapes != {k: tuple(v.shape) for k, v in reference.state_dict().items()}:
        raise MedMambaError(f"{trainer_class.__name__}: the network rebuilt from the manifest differs from the "
                            f"trainer's ({type(rebuilt).__name__} vs {type(reference).__name__})")
    for fold, ckpt in checkpoints.items():
        try:
            rebuilt.load_state_dict(ckpt["network_weights"])
        except RuntimeError as err:
            raise MedMambaError(f"fold {fold}: weights do not fit the network ({str(err).splitlines()[0]})") from None
