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
from medmamba.io_utils import atomic_dir, check_output_dir, check_output_file

FORMATS = {"seg.nrrd": ".seg.nrrd", "nii.gz": ".nii.gz"}
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


COMMAND = "predict"


def plans_configuration(package: ModelPackage):
    """nnU-Net's ``(PlansManager, ConfigurationManager)`` for the package's configuration; a one-line error when the
    package's plans do not describe it."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = package.manifest["configuration"]
    try:
        plans_manager = PlansManager(package.plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        if len(configuration_manager.patch_size) not in (2, 3):
            raise ValueError(f"patch size {configuration_manager.patch_size}")
        plans_manager.image_reader_writer_class  # noqa: B018  (resolves the reader named in the plans)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise MedMambaError(f"{package.path}: plans.json does not describe configuration {configuration!r} "
                            f"({type(err).__name__}: {err})") from None
    return plans_manager, configuration_manager


def make_predictor(package: ModelPackage, device: str = "cpu"):
    """nnU-Net's ``nnUNetPredictor`` set up as ``nnUNetv2_predict`` would be, from the package alone."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    check_device(device)
    manifest = package.manifest
    plans_manager, configuration_manager = plans_configuration(package)
    try:
        network = build_network(manifest["network"])
    except MedMambaError:
        raise
    except Exception as err:  # noqa: BLE001  (a manifest's arguments reach the network's constructor)
        raise MedMambaError(f"{package.path}: the network in the manifest cannot be built "
                            f"({type(err).__name__}: {str(err).strip()[:200]})") from None
    parameters = [package.weights[f] for f in package.folds]
    for fold, state in zip(package.folds, parameters):
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            raise MedMambaError(f"{package.path}: fold {fold}'s weights do not fit the network "
                                f"({str(err).strip().splitlines()[0][:200]})") from None
    mirroring = manifest["inference_allowed_mirroring_axes"]
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, parameters, package.dataset_json,
                                    manifest["trainer"], None if mirroring is None else tuple(mirroring))
    return predictor


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` on a machine without CUDA (MedMambaError); ``"cpu"`` always passes."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MedMambaError("--device cuda: no CUDA device available")


def _split_ending(path: Path, endings: list[str]) -> tuple[str, str] | None:
    for ending in sorted(endings, key=len, reverse=True):
        if path.name.endswith(ending):
            return path.name[: -len(ending)], ending
    return None


def find_cases(source: Path, num_channels: int, endings: list[str]) -> list[tuple[str, list[Path]]]:
    """``(case id, channel files)`` for an image or a folder. One-channel models take any image name (an nnU-Net
    ``_0000`` suffix is dropped from the id); several channels need nnU-Net's ``CASE_XXXX`` naming."""
    if source.is_dir():
        named = sorted(p for p in source.iterdir() if _split_ending(p, endings) and not p.name.startswith("."))
        for path in named:
            if path.is_symlink() and not path.exists():
                raise MedMambaError(f"{path}: a broken or looping symbolic link")
        files = [p for p in named if p.is_file()]
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


# Most voxels an input may have once nnU-Net resamples it to the model's spacing (8 GiB as float32): more means a
# header whose spacing is wrong, and a run that would exhaust memory.
MAX_RESAMPLED_VOXELS = 2**31


def check_case(files: list[Path], manifest: dict, target_spacing, natural_images: bool) -> None:
    """A case's channel files as the model needs them: readable, finite, of the model's dimensionality, with the
    model's channel count, a positive finite spacing that resamples to a sane size, all on one voxel grid.

    Args:
        files: the case's files, one per channel file.
        manifest: the package's manifest (channels, configuration).
        target_spacing: the configuration's spacing (numpy axis order; 2 or 3 values).
        natural_images: the model reads 2D natural images (an RGB file holds three channels).
    """
    from medmamba.datasets.readers import check_same_geometry, read_sitk

    channels = manifest["channels"]
    wanted = f"{len(channels)} channel(s) ({', '.join(c['name'] for c in channels)})"
    images = [read_sitk(path) for path in files]
    found = 0
    for path, image in zip(files, images):
        dims, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
        size = "x".join(map(str, image.GetSize()))
        if components > 1 and not natural_images:
            raise MedMambaError(f"{path}: {components} values per voxel (a vector image of size {size}); the model "
                                f"takes {wanted}, one scalar image per channel file")
        if dims == 4:
            raise MedMambaError(f"{path}: a 4D image (size {size}); the model takes {wanted}: give one 3D file per "
                                f"channel, named CASE_0000, CASE_0001, ...")
        if len(target_spacing) == 3 and dims != 3:
            raise MedMambaError(f"{path}: a {dims}D image (size {size}); the model ({manifest['configuration']}) "
                                f"needs 3D images")
        _check_spacing(path, image, target_spacing)
        found += components
    if found != len(channels):
        raise MedMambaError(f"{files[0]}: {found} channel(s); the model takes {wanted}")
    for path, image in zip(files[1:], images[1:]):
        check_same_geometry(images[0], image, files[0], path)


def _check_spacing(path: Path, image, target_spacing) -> None:
    """Positive, finite spacing, and a resampled size (as nnU-Net resamples: the last axes, numpy order) that fits
    ``MAX_RESAMPLED_VOXELS``."""
    import numpy as np

    spacing = np.array(image.GetSpacing()[::-1], dtype=float)
    shape = np.array(image.GetSize()[::-1], dtype=float)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise MedMambaError(f"{path}: spacing {tuple(image.GetSpacing())} must be positive and finite")
    axes = min(len(target_spacing), len(shape))
    resampled = shape.copy()
    resampled[-axes:] = shape[-axes:] * spacing[-axes:] / np.array(target_spacing[-axes:], dtype=float)
    if np.prod(np.maximum(np.round(resampled), 1)) > MAX_RESAMPLED_VOXELS:
        raise MedMambaError(f"{path}: at the model's spacing {tuple(target_spacing)} this image would be "
                            f"{'x'.join(f'{v:.3g}' for v in resampled)} voxels; check the spacing in its header "
                            f"({tuple(image.GetSpacing())})")


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
            device: str = "cpu", folds: list | None = None, overwrite: bool = False) -> list[Path]:
    """Segment an image or every image in a folder; return the written files. Every input is checked first (the
    package's integrity, each image against the model, the output place); then the model loads and the cases are
    predicted, shown per case. A folder output follows ``medmamba.io_utils.atomic_dir``; an existing output file is
    replaced only with ``overwrite``.

    Args:
        model: the model package (.zip).
        source: an image, or a folder of images.
        output: a ``.seg.nrrd``/``.nii.gz`` file for a single image, else a folder.
        fmt: ``seg.nrrd`` or ``nii.gz`` (default: from ``output``'s ending, else ``seg.nrrd``).
        device: ``cpu`` or ``cuda``.
        folds: subset of the package's folds.
        overwrite: replace an existing output file, or write into a folder holding other files (kept).

    Returns:
        The written files.
    """
    from tqdm import tqdm

    check_device(device)
    package = load_package(model, folds)
    plans_manager, configuration_manager = plans_configuration(package)
    reader = plans_manager.image_reader_writer_class
    source, output = Path(source), Path(output)
    cases = find_cases(source, len(package.manifest["channels"]), reader.supported_file_endings)
    natural = reader.__name__ == "NaturalImage2DIO"
    for _, files in tqdm(cases, desc="Checking inputs", unit="case", disable=len(cases) == 1):
        check_case(files, package.manifest, configuration_manager.spacing, natural)
    targets, fmt = output_paths(source, output, cases, fmt)
    single_file = targets == [output]
    if single_file:
        check_output_file(output, overwrite)
    else:
        check_output_dir(output, COMMAND, overwrite)
    predictor = make_predictor(package, device)
    if single_file:
        _predict_cases(predictor, package, cases, targets, fmt, output.parent)
    else:
        with atomic_dir(output, COMMAND, overwrite) as tmp:
            _predict_cases(predictor, package, cases, [tmp / t.name for t in targets], fmt, tmp)
    return targets


def _predict_cases(predictor, package: ModelPackage, cases: list, targets: list[Path], fmt: str,
                   scratch_parent: Path) -> None:
    import contextlib
    import io

    from tqdm import tqdm

    file_ending = package.dataset_json["file_ending"]
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".medmamba-predict-", dir=scratch_parent))
    try:
        for (case, files), target in tqdm(list(zip(cases, targets)), desc="Predicting", unit="case",
                                          disable=len(cases) == 1):
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's per-case chatter
                predictor.predict_from_files_sequential([[str(f) for f in files]], [str(scratch / case)])
            write_output(scratch / f"{case}{file_ending}", target, fmt, package.manifest["labels"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
