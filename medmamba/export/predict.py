"""Predict with a model package through nnU-Net's own predictor, so labels match ``nnUNetv2_predict``."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from medmamba.errors import MedMambaError
from medmamba.export.network import build_network
from medmamba.export.package import ModelPackage, load_package

FORMATS = {"seg.nrrd": ".seg.nrrd", "nii.gz": ".nii.gz"}
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def make_predictor(package: ModelPackage, device: str = "cpu"):
    """nnU-Net's ``nnUNetPredictor`` set up as ``nnUNetv2_predict`` would be, from the package alone."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if device == "cuda" and not torch.cuda.is_available():
        raise MedMambaError("--device cuda: no CUDA device available")
    manifest = package.manifest
    plans_manager = PlansManager(package.plans)
    configuration_manager = plans_manager.get_configuration(manifest["configuration"])
    network = build_network(manifest["network"])
    parameters = [package.weights[f] for f in package.folds]
    network.load_state_dict(parameters[0])
    mirroring = manifest["inference_allowed_mirroring_axes"]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=True, device=torch.device(device), verbose=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, parameters, package.dataset_json,
                                    manifest["trainer"], None if mirroring is None else tuple(mirroring))
    return predictor


def _split_ending(path: Path, endings: list[str]) -> tuple[str, str] | None:
    for ending in sorted(endings, key=len, reverse=True):
        if path.name.endswith(ending):
            return path.name[: -len(ending)], ending
    return None


def find_cases(source: Path, num_channels: int, endings: list[str]) -> list[tuple[str, list[Path]]]:
    """``(case id, channel files)`` for an image or a folder. One-channel models take any image name (an nnU-Net
    ``_0000`` suffix is dropped from the id); several channels need nnU-Net's ``CASE_XXXX`` naming."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and _split_ending(p, endings))
    elif source.is_file():
        if not _split_ending(source, endings):
            raise MedMambaError(f"{source}: unsupported image type (expected {', '.join(endings)})")
        files = [source]
    else:
        raise MedMambaError(f"{source}: no such file or folder")
    cases: dict[str, list[Path]] = {}
    for path in files:
        stem, ending = _split_ending(path, endings)
        match = CHANNEL_SUFFIX.match(stem)
        if num_channels == 1:
            case = match["case"] if match and match["channel"] == "0000" else stem
            if case in cases:
                raise MedMambaError(f"{path}: case {case!r} appears twice")
            cases[case] = [path]
        elif match:
            if source.is_file() and match["channel"] != "0000":
                raise MedMambaError(f"{path}: give the first channel (CASE_0000{ending}) of a multi-channel case")
            cases.setdefault(match["case"], [path.with_name(f"{match['case']}_{c:04d}{ending}")
                                             for c in range(num_channels)])
        else:
            raise MedMambaError(f"{path}: a {num_channels}-channel model needs files named CASE_XXXX{ending}")
    if not cases:
        raise MedMambaError(f"{source}: no images (expected {', '.join(endings)})")
    for channel_files in cases.values():
        for path in channel_files:
            if not path.is_file():
                raise MedMambaError(f"{path}: missing channel file")
    return sorted(cases.items())


def output_paths(source: Path, output: Path, cases: list, fmt: str | None) -> tuple[list[Path], str]:
    """Output file per case and the format: ``output`` is a file for a single image if it ends with a format's
    ending, else a folder; the format defaults to that ending, else ``seg.nrrd``."""
    file_fmt = next((f for f, ending in FORMATS.items() if output.name.endswith(ending)), None)
    if source.is_file() and file_fmt:
        if fmt and fmt != file_fmt:
            raise MedMambaError(f"{output}: ending does not match --format {fmt}")
        return [output], file_fmt
    fmt = fmt or "seg.nrrd"
    return [output / f"{case}{FORMATS[fmt]}" for case, _ in cases], fmt


def write_output(produced: Path, target: Path, fmt: str, segments: list[dict]) -> None:
    """Move nnU-Net's exported label map to ``target`` (converting it to ``.seg.nrrd`` or NIfTI if needed)."""
    import SimpleITK as sitk

    if fmt == "nii.gz" and produced.name.endswith(".nii.gz"):
        os.replace(produced, target)
        return
    image = sitk.ReadImage(str(produced))
    if fmt == "nii.gz":
        sitk.WriteImage(image, str(produced.with_name("converted.nii.gz")))
        os.replace(produced.with_name("converted.nii.gz"), target)
        return
    from medmamba.export.seg_nrrd import write_seg_nrrd

    write_seg_nrrd(target, sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                   image.GetDirection(), segments)


def predict(model: str | Path, source: str | Path, output: str | Path, fmt: str | None = None,
            device: str = "cpu", folds: list | None = None) -> list[Path]:
    """Segment an image or every image in a folder; return the written files. Progress is shown per case."""
    import contextlib
    import io

    from tqdm import tqdm

    package = load_package(model, folds)
    manifest = package.manifest
    predictor = make_predictor(package, device)
    endings = predictor.plans_manager.image_reader_writer_class.supported_file_endings
    source, output = Path(source), Path(output)
    cases = find_cases(source, len(manifest["channels"]), endings)
    targets, fmt = output_paths(source, output, cases, fmt)
    file_ending = package.dataset_json["file_ending"]
    written = []
    for (case, files), target in tqdm(list(zip(cases, targets)), desc="Predicting", unit="case",
                                      disable=len(cases) == 1):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".medmamba-predict-", dir=target.parent))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's per-case chatter
                predictor.predict_from_files_sequential([[str(f) for f in files]], [str(tmp / case)])
            write_output(tmp / f"{case}{file_ending}", target, fmt, manifest["labels"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        written.append(target)
    return written
