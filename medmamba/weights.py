"""Official checkpoints into medmamba's networks: load, convert with the entry's ``checkpoint_filter``, report the
coverage, write our state dict as safetensors.

A registry entry that imports official weights registers ``checkpoint_filter=fn`` beside its builder (as timm's
``checkpoint_filter_fn``): ``fn(state_dict, model)`` maps the official state dict to ours and returns a
:class:`Converted`, which remembers which official tensors each of ours came from. An entry without a filter
imports checkpoints written by medmamba itself (the keys are ours).

    report = medmamba.import_weights("umamba_bot", "checkpoint_final.pth", "umamba_bot.safetensors",
                                     preset="paper", spatial_dims=3, in_channels=1, num_classes=2)
    print(report.summary())
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medmamba import io_utils
from medmamba.errors import MedMambaError
from medmamba.registry import create_model, model_entry

__all__ = ["Converted", "FORKED_TRAINERS", "ImportReport", "convert_state_dict", "extract_state_dict",
           "import_nnunet_results", "import_weights", "load_checkpoint", "remap", "save_state_dict"]

STATE_DICT_KEYS = ("model", "state_dict", "network_weights")
# nnU-Net's checkpoints log numpy scalars; these rebuild plain numbers and nothing else (under numpy 1's and 2's
# module names).
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_NUMPY_SCALARS = [
    (_multiarray.scalar, "numpy.core.multiarray.scalar"),
    (_multiarray.scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16,
                                  np.float32, np.float64)),
]


def load_checkpoint(path: str | os.PathLike) -> Any:
    """A checkpoint's top-level object, read with ``torch.load(weights_only=True)`` (numpy scalars allowed).

    Args:
        path: a file written by ``torch.save``.

    Returns:
        The loaded object (usually a dict).

    Raises:
        MedMambaError: the file is missing, is no PyTorch checkpoint, or holds Python objects that only
            ``weights_only=False`` would rebuild (then nothing is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise MedMambaError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALARS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"it holds a {found.group(1)}" if found else "it is not a plain checkpoint"
        raise MedMambaError(f"{path}: torch.load(weights_only=True) refuses it ({what}); only tensors and plain "
                            "values are read, no Python objects: re-save its state dict with "
                            "torch.save(model.state_dict(), ...)") from None
    except Exception as err:  # noqa: BLE001 - whatever torch.load trips on, the file is no checkpoint
        message = str(err).strip().splitlines()[0] if str(err).strip() else "empty or cut short"
        raise MedMambaError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {message})") from None


def extract_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: the checkpoint itself, or the dict under ``model``, ``state_dict``
    or ``network_weights``; a ``module.`` prefix (DataParallel) is stripped.

    Args:
        checkpoint: what :func:`load_checkpoint` returned.
        source: the file's name, for error messages.

    Returns:
        Tensor names to tensors.
    """
    if isinstance(checkpoint, Mapping) and checkpoint and not _is_state_dict(checkpoint):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(checkpoint.get(key)):
                checkpoint = checkpoint[key]
                break
    if not _is_state_dict(checkpoint):
        keys = ", ".join(map(str, list(checkpoint)[:8])) if isinstance(checkpoint, Mapping) else \
            type(checkpoint).__name__
        raise MedMambaError(f"{source}: no state dict in it (a dict of tensors, or one under "
                            f"{', '.join(repr(k) for k in STATE_DICT_KEYS)}); found: {keys or 'an empty dict'}")
    prefix = "module."
    if all(k.startswith(prefix) for k in checkpoint):
        return {k[len(prefix):]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


class Converted(dict):
    """Our state dict converted from an official one; ``sources[ours]`` names the official tensors it came from.

    Build it with :meth:`put` (or :func:`remap`). Putting a key again is accepted when the value is equal: the
    official state dict held one tensor under two names (a module registered twice); different values are an
    error naming both.
    """

    def __init__(self):
        super().__init__()
        self.sources: dict[str, list[str]] = {}

    def put(self, key: str, value: torch.Tensor, *theirs: str) -> None:
        """Set our tensor ``key`` to ``value``, made from the official tensors named ``theirs``."""
        if key in self:
            held = self[key]
            if held.shape != value.shape or not torch.equal(held, value):
                raise MedMambaError(f"official tensors {self.sources[key][0]!r} and {theirs[0]!r} both give "
                                    f"{key!r} but hold different values")
            self.sources[key].extend(theirs)
            return
        self[key] = value
        self.sources[key] = list(theirs)


Rename = Callable[[str], "tuple[str, Callable[[torch.Tensor], torch.Tensor] | None] | None"]


def remap(state_dict: Mapping[str, torch.Tensor], rename: Rename) -> Converted:
    """Convert key by key: ``rename(theirs)`` gives ``(ours, transform or None)``, or None for a tensor we do not
    use.

    Args:
        state_dict: the official state dict.
        rename: the per-key mapping.

    Returns:
        Our state dict, with where each tensor came from.
    """
    out = Converted()
    for key, value in state_dict.items():
        mapped = rename(key)
        if mapped is not None:
            ours, transform = mapped
            out.put(ours, value if transform is None else transform(value), key)
    return out


@dataclass
class ImportReport:
    """What an import loaded: every one of ours loaded (``complete``) or what is missing, unused, mismatched."""

    entry: str
    source: str
    ours: int
    loaded: list[str]
    missing: list[str]
    unused: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # ours, shape given, shape expected
    aliases: list[list[str]]  # official names that held one tensor
    sources: dict[str, list[str]] = field(repr=False, default_factory=dict)  # ours -> the official names it came from
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # ours that loaded

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        """The coverage report: the counts, then each missing, mismatched and unused tensor on a line of its own."""
        lines = [f"{self.entry} <- {self.source}: loaded {len(self.loaded)} / {self.ours} tensors"]
        lines += [f"  missing (ours): {k}" for k in self.missing]
        lines += [f"  shape mismatch: {k}: checkpoint {tuple(a)}, ours {tuple(b)}" for k, a, b in self.mismatched]
        lines += [f"  unused (theirs): {k}" for k in self.unused]
        if self.aliases:
            lines.append(f"  aliases accepted: {len(self.aliases)} tensors held under two or more equal names, e.g.\n"
                         f"    {' = '.join(self.aliases[0])}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable counts and names (no tensors)."""
        return {"entry": self.entry, "source": self.source, "ours": self.ours, "loaded": len(self.loaded),
                "missing": self.missing, "unused": self.unused,
                "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
                "aliases": len(self.aliases)}


def convert_state_dict(entry: str, state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                       source: str = "checkpoint") -> ImportReport:
    """Map an official state dict to ``model``'s with the entry's filter and compare names and shapes.

    Args:
        entry: the registry name.
        state_dict: the official tensors.
        model: ours, at the checkpoint's configuration (it may live on the meta device).
        source: what the tensors came from, for the report.

    Returns:
        The report; ``report.state_dict`` holds ours that loaded, as contiguous tensors in our dtypes.
    """
    filter_fn = model_entry(entry).checkpoint_filter
    if filter_fn is None:
        converted = Converted()
        for key, value in state_dict.items():
            converted.put(key, value, key)
    else:
        converted = filter_fn(dict(state_dict), model)
        if not isinstance(converted, Converted):
            raise TypeError(f"{entry}'s checkpoint_filter must return a medmamba.weights.Converted")
    expected = model.state_dict()
    loaded, missing, mismatched, state = [], [], [], {}
    for key, ours in expected.items():
        if key not in converted:
            missing.append(key)
        elif tuple(converted[key].shape) != tuple(ours.shape):
            mismatched.append((key, tuple(converted[key].shape), tuple(ours.shape)))
        else:
            loaded.append(key)
            value = converted[key]
            state[key] = (value.to(ours.dtype) if value.is_floating_point() else value).contiguous()
    used = {name for key in converted if key in expected for name in converted.sources[key]}
    return ImportReport(
        entry=entry, source=source, ours=len(expected), loaded=loaded, missing=missing,
        unused=[k for k in state_dict if k not in used], mismatched=mismatched,
        aliases=[names for names in converted.sources.values() if len(names) > 1], sources=converted.sources,
        state_dict=state)


def import_weights(entry: str, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
                   output: str | os.PathLike | None = None, *, model: nn.Module | None = None,
                   preset: str | None = None, spatial_dims: int | None = None, in_channels: int = 1,
                   num_classes: int | None = None, allow_partial: bool = False, overwrite: bool = False,
                   **model_kwargs: Any) -> ImportReport:
    """Import an official checkpoint into a medmamba entry.

    Args:
        entry: the registry name (``medmamba.list_models()``).
        checkpoint: a checkpoint file (a state dict, or a dict holding one under ``model``, ``state_dict`` or
            ``network_weights``), or the state dict itself.
        output: where to write our state dict as safetensors (written only when the report is complete, or with
            ``allow_partial``: then the tensors that loaded).
        model: ours to convert into; by default built with ``create_model`` from the arguments below (on the
            meta device: only names and shapes are needed). The arguments are recorded in the output's metadata
            either way.
        preset: a preset of the entry.
        spatial_dims: 2 or 3 (default: the entry's first).
        in_channels: input channels of the checkpoint's model.
        num_classes: output classes of the checkpoint's model (default: the entry's).
        allow_partial: write ``output`` even when some of ours are missing or mismatched.
        overwrite: replace ``output`` if it exists (checked before any work).
        **model_kwargs: further builder arguments (as ``create_model``).

    Returns:
        The coverage report.
    """
    if output is not None:
        io_utils.check_output_file(output, overwrite)
    if isinstance(checkpoint, Mapping):
        source, state_dict = "state dict", extract_state_dict(checkpoint)
    else:
        source = str(checkpoint)
        state_dict = extract_state_dict(load_checkpoint(checkpoint), source)
    config = dict(preset=preset, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                  **model_kwargs)
    if model is None:
        with torch.device("meta"):
            model = create_model(entry, **config)
    report = convert_state_dict(entry, state_dict, model, source)
    if output is not None and (report.complete or allow_partial):
        metadata = {"entry": entry, "source": Path(source).name,
                    **{k: str(v) for k, v in config.items() if v is not None}}
        save_state_dict(report.state_dict, output, metadata)
    return report


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as safetensors under a temporary name, then rename it to ``path``.

    Args:
        state_dict: tensors (made contiguous, never shared).
        path: the ``.safetensors`` file.
        metadata: strings stored in the file's header.

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    with io_utils.atomic_file(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, str(tmp),
                  metadata=dict(metadata or {}))
    return path


# Trainers of nnU-Net forks whose results medmamba's trainers take over: theirs -> ours (same network).
FORKED_TRAINERS = {
    "nnUNetTrainerUMambaBot": "UMambaBotTrainer",
    "nnUNetTrainerUMambaEnc": "UMambaEncTrainer",
    "nnUNetTrainerUMambaEncNoAMP": "UMambaEncTrainer",
}
_TRAINER_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")


def _forked_results(source: Path) -> list[tuple[str, Path]]:
    """(dataset folder name, trainer folder) for every forked trainer's folder at, in or two levels under
    ``source`` (a trainer folder, a DatasetXXX_Name folder or an nnUNet_results folder)."""
    def is_forked(folder: Path) -> bool:
        return folder.is_dir() and folder.name.split("__")[0] in FORKED_TRAINERS and folder.name.count("__") == 2

    if is_forked(source):
        return [(source.resolve().parent.name, source)]
    found = [(source.name, d) for d in sorted(source.iterdir()) if is_forked(d)]
    for dataset in sorted(d for d in source.iterdir() if d.is_dir() and not is_forked(d)):
        found += [(dataset.name, d) for d in sorted(dataset.iterdir()) if is_forked(d)]
    return found


def import_nnunet_results(source: str | os.PathLike, output: str | os.PathLike,
                          overwrite: bool = False) -> list[Path]:
    """Turn results of a forked nnU-Net (U-Mamba's ``nnUNetTrainerUMambaBot`` / ``nnUNetTrainerUMambaEnc``) into
    results that stock nnU-Net predicts with medmamba's trainer (``-tr UMambaBotTrainer`` / ``UMambaEncTrainer``).

    Each ``<trainer>__<plans>__<configuration>`` folder becomes ``OUTPUT/<dataset>/<our trainer>__<plans>__
    <configuration>``, written as medmamba writes output folders (``medmamba.io_utils.atomic_dir``): plans, dataset
    and fingerprint copied, every fold's ``checkpoint_*.pth`` converted (``network_weights`` through the entry's
    checkpoint filter, nnU-Net's checkpoint layout kept with ``trainer_name`` ours; the optimizer keeps its
    settings, not its momentum, whose order follows the official parameters), the fold's other files copied.

    Args:
        source: a forked trainer's results folder, a ``DatasetXXX_Name`` folder or an ``nnUNet_results`` folder.
        output: the ``nnUNet_results`` folder to write into.
        overwrite: write into trainer folders that hold files this command did not write (they are kept).

    Returns:
        The trainer folders written.
    """
    import shutil

    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise MedMambaError(f"{source}: no such folder")
    found = _forked_results(source)
    if not found:
        raise MedMambaError(f"{source}: no results of {', '.join(sorted(FORKED_TRAINERS))} in it (folders named "
                            "<trainer>__<plans>__<configuration>)")
    jobs = []
    for dataset, folder in found:
        theirs, plans_name, configuration = folder.name.split("__")
        target = output / dataset / f"{FORKED_TRAINERS[theirs]}__{plans_name}__{configuration}"
        io_utils.check_output_dir(target, "import-nnunet", overwrite)
        for name in _TRAINER_FILES[:2]:
            if not (folder / name).is_file():
                raise MedMambaError(f"{folder}: no {name}")
        jobs.append((folder, target, FORKED_TRAINERS[theirs], configuration))
    for folder, target, trainer, configuration in jobs:
        with io_utils.atomic_dir(target, "import-nnunet", overwrite) as tmp:
            for name in _TRAINER_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, tmp / name)
            for fold in sorted(folder.glob("fold_*")):
                (tmp / fold.name).mkdir()
                for item in sorted(fold.iterdir()):
                    if item.name.startswith("checkpoint") and item.suffix == ".pth":
                        _convert_nnunet_checkpoint(item, tmp / fold.name / item.name, trainer, tmp, configuration)
                    elif item.is_dir():
                        shutil.copytree(item, tmp / fold.name / item.name)
                    else:
                        shutil.copy2(item, tmp / fold.name / item.name)
    return [target for _, target, _, _ in jobs]


def _convert_nnunet_checkpoint(path: Path, target: Path, trainer_name: str, trainer_folder: Path,
                               configuration: str) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from medmamba.nnunet_plugins import trainers
    from medmamba.nnunet_plugins.base import plain

    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or "network_weights" not in checkpoint:
        raise MedMambaError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    plans = PlansManager(load_json(str(trainer_folder / "plans.json")))
    dataset = load_json(str(trainer_folder / "dataset.json"))
    manager = plans.get_configuration(configuration)
    trainer = getattr(trainers, trainer_name)
    with torch.device("meta"):
        network = trainer.build_network_architecture(
            plans, manager, determine_num_input_channels(plans, manager, dataset),
            plans.get_label_manager(dataset).num_segmentation_heads, enable_deep_supervision=True)
    report = convert_state_dict(trainer.network_name, extract_state_dict(checkpoint["network_weights"], str(path)),
                                network, str(path))
    if not report.complete:
        raise MedMambaError(f"{path}: does not fit {trainer_name}'s network for these plans:\n{report.summary()}")
    converted = {k: plain(v) for k, v in checkpoint.items() if k not in ("network_weights", "optimizer_state")}
    optimizer = checkpoint.get("optimizer_state")
    if isinstance(optimizer, Mapping) and optimizer.get("param_groups"):
        group = {k: plain(v) for k, v in optimizer["param_groups"][0].items()}
        group["params"] = list(range(sum(1 for _ in network.parameters())))
        converted["optimizer_state"] = {"state": {}, "param_groups": [group]}
    init_args = dict(converted.get("init_args", {}))
    init_args.pop("unpack_dataset", None)  # nnU-Net 2.2's trainer argument, gone from 2.8's
    converted.update(network_weights=report.state_dict, trainer_name=trainer_name, init_args=init_args)
    torch.save(converted, target)
