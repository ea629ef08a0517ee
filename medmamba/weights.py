"""Official checkpoints into medmamba's networks: load, convert with the entry's ``checkpoint_filter``, report the
coverage, write our state dict as safetensors.

A registry entry that imports official weights registers ``checkpoint_filter=fn`` beside its builder (as timm's
``checkpoint_filter_fn``): ``fn(state_dict, model)`` maps the official state dict to ours and returns a
:class:`Converted`, which remembers which official tensors each of ours came from. An entry without a filter
imports checkpoints written by medmamba itself (the keys are ours).

    report = medmamba.import_weights("umamba_bot", "checkpoint_final.pth", "umamba_bot.safetensors",
                                     spatial_dims=3, in_channels=1, num_classes=14, features=..., strides=...)
    print(report.summary())
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_file
from medmamba.registry import create_model, model_entry

STATE_DICT_KEYS = ("model", "state_dict", "network_weights")
# nnU-Net's checkpoints log numpy scalars; these rebuild plain numbers and nothing else.
_NUMPY_SCALARS = [
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    (np._core.multiarray.scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    *(type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.float16,
                                  np.float32, np.float64)),
]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
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
        first = str(err).strip().splitlines()[-1] if "Weights only load failed" not in str(err) else \
            _unsafe_globals(path)
        raise MedMambaError(f"{path}: holds Python objects that torch.load(weights_only=True) refuses ({first}); "
                            "re-save its state dict with torch.save(model.state_dict(), ...)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MedMambaError(f"{path}: not a PyTorch checkpoint ({message})") from None


def _unsafe_globals(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only used to word the error
        return "objects outside the allowed types"
    return "objects of type " + ", ".join(names) if names else "objects outside the allowed types"


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
    state_dict: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)  # ours that loaded

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        """The coverage report, one finding per line."""
        lines = [f"{self.entry} <- {self.source}: loaded {len(self.loaded)} / {self.ours} tensors"]
        lines += [f"  missing (ours): {k}" for k in self.missing]
        lines += [f"  shape mismatch: {k}: checkpoint {tuple(a)}, ours {tuple(b)}" for k, a, b in self.mismatched]
        lines += [f"  unused (theirs): {k}" for k in self.unused]
        if self.aliases:
            lines.append(f"  {len(self.aliases)} tensors held under two or more equal names (aliases), e.g. "
                         + " = ".join(self.aliases[0]))
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
        aliases=[names for names in converted.sources.values() if len(names) > 1], state_dict=state)


def import_weights(entry: str, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor],
                   output: str | os.PathLike | None = None, *, model: nn.Module | None = None,
                   preset: str | None = None, spatial_dims: int | None = None, in_channels: int = 1,
                   num_classes: int | None = None, allow_partial: bool = False, **model_kwargs: Any) -> ImportReport:
    """Import an official checkpoint into a medmamba entry.

    Args:
        entry: the registry name (``medmamba.list_models()``).
        checkpoint: a checkpoint file (a state dict, or a dict holding one under ``model``, ``state_dict`` or
            ``network_weights``), or the state dict itself.
        output: where to write our state dict as safetensors (written only when the report is complete, or with
            ``allow_partial``: then the tensors that loaded).
        model: ours to convert into; by default built with ``create_model`` from the arguments below (on the
            meta device: only names and shapes are needed).
        preset: a preset of the entry.
        spatial_dims: 2 or 3 (default: the entry's first).
        in_channels: input channels of the checkpoint's model.
        num_classes: output classes of the checkpoint's model (default: the entry's).
        allow_partial: write ``output`` even when some of ours are missing or mismatched.
        **model_kwargs: further builder arguments (as ``create_model``).

    Returns:
        The coverage report.
    """
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
                    **{k: repr(v) for k, v in config.items() if v is not None}}
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
    with atomic_file(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}, str(tmp),
                  metadata=dict(metadata or {}))
    return path
