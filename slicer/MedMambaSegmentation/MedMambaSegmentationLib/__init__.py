"""What the MedMambaSegmentation module does outside Slicer's API: importable and tested without Slicer.

The module runs ``medmamba predict`` in a subprocess of Slicer's Python (as SlicerNNUNet runs nnU-Net), so a
crash or a CUDA error in the prediction cannot take Slicer down, and loads the ``.seg.nrrd`` it writes.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

PIP_REQUIREMENT = "medmamba"


class PredictionError(RuntimeError):
    """``medmamba predict`` failed; the message is its last error line."""


def medmamba_installed() -> bool:
    return importlib.util.find_spec("medmamba") is not None


def slicer_python() -> str:
    """Slicer's own Python launcher (``PythonSlicer``) if on PATH, else the running interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def safe_file_stem(name: str) -> str:
    """A volume's node name as a file-name stem (Slicer allows any characters in names)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "volume"


def work_paths(work_dir: str | os.PathLike, volume_name: str) -> tuple[Path, Path]:
    """Where the module saves the input volume (``.nrrd``, read by SimpleITK) and where the segmentation goes."""
    stem = safe_file_stem(volume_name)
    return Path(work_dir) / f"{stem}.nrrd", Path(work_dir) / f"{stem}.seg.nrrd"


def predict_command(model: str | os.PathLike, input_image: str | os.PathLike, output_seg: str | os.PathLike,
                    device: str = "cpu", python: str | None = None) -> list[str]:
    return [python or slicer_python(), "-m", "medmamba", "predict", "--model", str(model), "-i", str(input_image),
            "-o", str(output_seg), "--format", "seg.nrrd", "--device", device]


def run_command(command: list[str], on_line: Callable[[str], None] | None = None) -> None:
    """Run ``command``, passing each output line (stdout and stderr, progress bars included) to ``on_line``;
    raise PredictionError with the last non-empty line if it fails."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, encoding="utf-8", errors="replace")
    last = ""
    for line in process.stdout:
        for part in line.replace("\r", "\n").splitlines():  # tqdm redraws with \r
            if part.strip():
                last = part.strip()
                if on_line:
                    on_line(last)
    if process.wait() != 0:
        raise PredictionError(last or f"{command[0]} exited with code {process.returncode}")


def require_single_channel(model: str | os.PathLike) -> None:
    """The module feeds one volume; several-channel models are run with ``medmamba predict`` on a folder."""
    from medmamba.export.package import read_manifest

    channels = read_manifest(model)["channels"]
    if len(channels) != 1:
        names = ", ".join(c["name"] for c in channels)
        raise PredictionError(f"{model}: the model takes {len(channels)} input channels ({names}); this module "
                              f"feeds one volume")


def describe_package(model: str | os.PathLike) -> str:
    """One line for the module's panel: trainer, configuration, folds, channels and labels of a package."""
    from medmamba.export.package import read_manifest

    m = read_manifest(model)
    channels = ", ".join(c["name"] for c in m["channels"])
    labels = ", ".join(label["name"] for label in m["labels"])
    return (f"{m['trainer']} ({m['configuration']}, folds {', '.join(map(str, m['folds']))}); "
            f"input: {channels}; labels: {labels}")
