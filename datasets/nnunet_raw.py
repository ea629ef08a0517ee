"""Writing nnU-Net v2 raw data sets: names, ``dataset.json``, images, and nnU-Net's own integrity check."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from medmamba.errors import MedMambaError


def nnunet_dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_name`` (id zero-padded to three digits).

    Raises:
        MedMambaError: the id is outside 1..999, or the name is empty or holds a space or a slash.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise MedMambaError(f"dataset id {dataset_id}: nnU-Net dataset ids are 1..999")
    if not name or any(c in name for c in "/\\ "):
        raise MedMambaError(f"dataset name {name!r}: must be non-empty without spaces or slashes")
    return f"Dataset{int(dataset_id):03d}_{name}"


def target_folder(raw_root: os.PathLike, dataset_id: int, name: str, overwrite: bool = False) -> Path:
    """``raw_root/DatasetXXX_name``; an error when another folder already uses the id (unless ``overwrite``)."""
    raw_root = Path(raw_root)
    target = raw_root / nnunet_dataset_name(dataset_id, name)
    if raw_root.is_dir() and not overwrite:
        taken = sorted(p.name for p in raw_root.glob(f"Dataset{int(dataset_id):03d}_*") if p.is_dir())
        if taken:
            raise MedMambaError(f"{raw_root / taken[0]}: dataset id {dataset_id} is taken (use --overwrite)")
    return target


def write_dataset_json(folder: os.PathLike, channel_names: dict, labels: dict, num_training: int,
                       file_ending: str, **extra) -> None:
    """Write nnU-Net v2's ``dataset.json`` into ``folder`` (replacing one that exists).

    Args:
        folder: the data set folder.
        channel_names: channel index -> name (e.g. ``{0: "CT"}``); indices are written as strings.
        labels: label name -> integer value (nnU-Net wants ``"background": 0`` among them).
        num_training: the number of training cases.
        file_ending: the images' ending, e.g. ``".nii.gz"``.
        **extra: further keys written as given (e.g. ``name``, ``description``).
    """
    content = {
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": {name: int(value) for name, value in labels.items()},
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    (Path(folder) / "dataset.json").write_text(json.dumps(content, indent=2))


def write_sitk(array: np.ndarray, path: os.PathLike, spacing: Sequence[float], origin=None, direction=None) -> None:
    """Write a numpy-ordered array with numpy-ordered ``spacing`` through SimpleITK."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in reversed(spacing)])
    if origin is not None:
        img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path), useCompression=True)


def verify_nnunet_dataset(folder: os.PathLike, shown_as: os.PathLike | None = None) -> None:
    """nnU-Net's ``verify_dataset_integrity``; its failure becomes a ``MedMambaError`` with nnU-Net's message.

    Args:
        folder: the data set folder to check.
        shown_as: the name to give it in the message (the final name of a data set checked in a temporary folder).
    """
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            verify_dataset_integrity(str(folder), num_processes=1)
    except (AssertionError, RuntimeError, FileNotFoundError) as err:
        shown = str(shown_as or folder)
        details = " ".join((str(err) or log.getvalue()).replace(str(folder), shown).split())[:300]
        raise MedMambaError(f"{shown}: fails nnU-Net's dataset integrity check (nothing written): {details}") \
            from None
