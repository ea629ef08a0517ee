"""Converters from the field's data layouts to nnU-Net v2 raw data sets.

- ``convert_msd(task_dir, raw_root, dataset_id)``: a Medical Segmentation Decathlon ``TaskXX_Name`` folder
  (``dataset.json`` with ``modality``/``labels``/``training``; 4D multi-modal NIfTI) -> one file per channel
  (``case_0000.nii.gz``, ``case_0001.nii.gz``, ...), labels copied after checking them.
- ``convert_folder(images_dir, labels_dir, raw_root, dataset_id, name, channels)``: images and labels in any
  SimpleITK format (NIfTI, NRRD, MHA/MHD, a DICOM series folder), matched by stem: label ``<case>.<ext>``,
  images ``<case>.<ext>`` (one channel) or ``<case>_<channel>.<ext>`` with ``<channel>`` a channel name or
  its 4-digit index. Written as NIfTI.
- ``convert_png2d(images_dir, masks_dir, raw_root, dataset_id, name)``: PNG/JPEG images and masks (ISIC, Kvasir)
  -> nnU-Net's natural-image layout (``case_0000.png``; an RGB image is one file read as channels R, G, B),
  mask grey values or colours mapped to consecutive labels.

Label mappings are ``{name: source value}`` (a grey value, or an (R, G, B) colour for masks); the output labels
are consecutive in that order, the first being background = 0. Without a mapping the values found are used,
sorted, with 0 as background. Each converter checks every pair (readable, same geometry, integer and expected
label values), writes into a temporary folder, runs nnU-Net's integrity check there (``verify=True``), and only
then renames the folder to ``raw_root/DatasetXXX_Name``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from medmamba.datasets.nnunet_raw import target_folder, verify_nnunet_dataset, write_dataset_json
from medmamba.datasets.readers import (
    LOSSY_ENDINGS,
    MEDICAL_ENDINGS,
    NATURAL_ENDINGS,
    check_finite,
    check_label_values,
    check_same_geometry,
    list_entries,
    read_natural,
    read_nibabel,
    read_sitk,
    split_ending,
)
from medmamba.errors import MedMambaError
from medmamba.io_utils import atomic_dir

LabelMap = Mapping[str, "int | Sequence[int]"]


# ----------------------------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon


def convert_msd(task_dir: os.PathLike, raw_root: os.PathLike, dataset_id: int, name: str | None = None,
                overwrite: bool = False, verify: bool = True) -> Path:
    """Convert an MSD task folder; returns the nnU-Net raw data set folder."""
    task_dir = Path(task_dir)
    meta = _read_json(task_dir / "dataset.json")
    if name is None:
        match = re.fullmatch(r"Task\d+_(.+)", task_dir.name)
        name = match.group(1) if match else task_dir.name
    try:
        channel_names = {int(k): v for k, v in meta["modality"].items()}
        msd_labels = {int(k): v for k, v in meta["labels"].items()}
        training = [(task_dir / e["image"], task_dir / e["label"]) for e in meta["training"]]
        test = [task_dir / e for e in meta.get("test", [])]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MedMambaError(f"{task_dir / 'dataset.json'}: not an MSD dataset.json ({type(err).__name__}: {err})") \
            from None
    if not training:
        raise MedMambaError(f"{task_dir / 'dataset.json'}: lists no training cases")
    labels = {v: k for k, v in sorted(msd_labels.items())}
    n_channels = len(channel_names)

    target = target_folder(raw_root, dataset_id, name, overwrite)
    with atomic_dir(target, "convert msd", overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test else ()):
            (tmp / sub).mkdir()
        for image_path, label_path in tqdm(training, desc=f"MSD {task_dir.name}", unit="case"):
            case = _stem(label_path, (".nii.gz", ".nii"))
            image, data = _msd_image(image_path, n_channels)
            label, label_data = read_nibabel(_existing(label_path, "label"))
            if label_data.shape != data.shape[:3] or not np.allclose(label.affine, image.affine, atol=1e-4):
                raise MedMambaError(f"{label_path}: geometry (shape {label_data.shape}) differs from "
                                    f"{image_path.name} (shape {data.shape[:3]})")
            check_label_values(label_data, label_path, allowed=msd_labels)
            _write_msd_channels(image, data, tmp / "imagesTr", case)
            shutil.copyfile(label_path, tmp / "labelsTr" / f"{case}.nii.gz")
        for image_path in tqdm(test, desc=f"MSD {task_dir.name} test", unit="case"):
            image, data = _msd_image(image_path, n_channels)
            _write_msd_channels(image, data, tmp / "imagesTs", _stem(image_path, (".nii.gz", ".nii")))
        write_dataset_json(tmp, channel_names, labels, len(training), ".nii.gz", name=name,
                           description=meta.get("description", ""), reference=meta.get("reference", ""),
                           licence=meta.get("licence", ""), converted_from=task_dir.name)
        if verify:
            verify_nnunet_dataset(tmp, shown_as=target)
    return target


def _msd_image(path: Path, n_channels: int):
    image, data = read_nibabel(_existing(path, "image"))
    channels = data.shape[3] if data.ndim == 4 else 1
    if data.ndim not in (3, 4) or channels != n_channels:
        raise MedMambaError(f"{path}: has {channels} channel(s) (shape {data.shape}), dataset.json lists "
                            f"{n_channels} modalities")
    check_finite(data, path)
    return image, data


def _write_msd_channels(image, data: np.ndarray, folder: Path, case: str) -> None:
    import nibabel as nib

    header = image.header.copy()
    for c in range(data.shape[3] if data.ndim == 4 else 1):
        channel = data[..., c] if data.ndim == 4 else data
        out = nib.Nifti1Image(np.ascontiguousarray(channel), image.affine, header)
        out.header.set_data_shape(channel.shape)
        nib.save(out, folder / f"{case}_{c:04d}.nii.gz")


# ----------------------------------------------------------------------------------------------------------------
# generic folder of medical images


def convert_folder(images_dir: os.PathLike, labels_dir: os.PathLike, raw_root: os.PathLike, dataset_id: int,
                   name: str, channels: Sequence[str] = ("MR",), labels: LabelMap | None = None,
                   overwrite: bool = False, verify: bool = True) -> Path:
    """Convert matched image/label files (any SimpleITK format, DICOM series folders too) to NIfTI."""
    import SimpleITK as sitk

    label_files = list_entries(labels_dir, MEDICAL_ENDINGS, "label", dicom=True)
    image_files = list_entries(images_dir, MEDICAL_ENDINGS, "image", dicom=True)
    cases = {case: _match_channels(case, image_files, channels, Path(labels_dir)) for case in label_files}
    used = {path for paths in cases.values() for path in paths}
    unmatched = [p for p in image_files.values() if p not in used]
    if unmatched:
        raise MedMambaError(f"{unmatched[0]}: image has no matching label in {labels_dir}")
    mapping = _value_mapping(labels)

    target = target_folder(raw_root, dataset_id, name, overwrite)
    with atomic_dir(target, "convert folder", overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        found: set[int] = set()
        for case, paths in tqdm(cases.items(), desc=f"folder {Path(images_dir).name}", unit="case"):
            images = [read_sitk(p) for p in paths]
            for path, img in zip(paths[1:], images[1:]):
                check_same_geometry(images[0], img, paths[0], path)
            label = read_sitk(label_files[case])
            check_same_geometry(images[0], label, paths[0], label_files[case])
            array = sitk.GetArrayViewFromImage(label)
            found.update(check_label_values(array, label_files[case], mapping and mapping.keys()).tolist())
            for c, img in enumerate(images):
                sitk.WriteImage(img, str(tmp / "imagesTr" / f"{case}_{c:04d}.nii.gz"), useCompression=True)
            # source values for now; mapped to consecutive labels once all values are known
            raw = sitk.Cast(label, sitk.sitkInt32)
            sitk.WriteImage(raw, str(tmp / "labelsTr" / f"{case}.nii.gz"), useCompression=True)
        mapping = mapping or _inferred_mapping(sorted(found))
        names = labels or {("background" if v == 0 else f"label_{v}"): v for v in mapping}
        for case in cases:
            path = tmp / "labelsTr" / f"{case}.nii.gz"
            label = sitk.ReadImage(str(path))
            out = sitk.GetImageFromArray(_apply_mapping(sitk.GetArrayFromImage(label), mapping))
            out.CopyInformation(label)
            sitk.WriteImage(out, str(path), useCompression=True)
        write_dataset_json(tmp, dict(enumerate(channels)), {n: mapping[_key(v)] for n, v in names.items()}, len(cases),
                           ".nii.gz", name=name, converted_from=str(images_dir))
        if verify:
            verify_nnunet_dataset(tmp, shown_as=target)
    return target


def _match_channels(case: str, image_files: dict[str, Path], channels: Sequence[str], labels_dir: Path) -> list[Path]:
    paths = []
    for c, channel in enumerate(channels):
        candidates = [f"{case}_{channel}", f"{case}_{c:04d}"] + ([case] if len(channels) == 1 else [])
        hits = [image_files[s] for s in candidates if s in image_files]
        if not hits:
            raise MedMambaError(f"{labels_dir / case}: label has no image for channel {channel!r} "
                                f"(looked for {' / '.join(candidates)})")
        if len(hits) > 1:
            raise MedMambaError(f"{hits[1]}: second image for case {case!r} channel {channel!r} ({hits[0].name})")
        paths.append(hits[0])
    return paths


# ----------------------------------------------------------------------------------------------------------------
# 2D natural images (ISIC, Kvasir)


def convert_png2d(images_dir: os.PathLike, masks_dir: os.PathLike, raw_root: os.PathLike, dataset_id: int,
                  name: str, labels: LabelMap | None = None, mask_suffix: str = "", tolerance: int | None = None,
                  overwrite: bool = False, verify: bool = True) -> Path:
    """Convert 2D images and masks; lossy (JPEG) masks snap to the nearest listed value within ``tolerance``
    (default 0 for lossless masks, 64 for JPEG; without a mapping JPEG masks are thresholded at 128)."""
    from PIL import Image

    image_files = list_entries(images_dir, NATURAL_ENDINGS, "image")
    mask_files = list_entries(masks_dir, NATURAL_ENDINGS, "mask")
    masks = {}
    for stem, path in mask_files.items():
        if not stem.endswith(mask_suffix):
            continue
        masks[stem[: len(stem) - len(mask_suffix)] if mask_suffix else stem] = path
    for case, path in image_files.items():
        if case not in masks:
            raise MedMambaError(f"{path}: image has no mask {case}{mask_suffix}.* in {masks_dir}")
    for case, path in masks.items():
        if case not in image_files:
            raise MedMambaError(f"{path}: mask has no image {case}.* in {images_dir}")
    mapping = _value_mapping(labels)

    pairs = [(case, image_files[case], masks[case]) for case in image_files]
    images = {case: read_natural(path) for case, path, _ in tqdm(pairs, desc="reading images", unit="image")}
    rgb = any(img.ndim == 3 for img in images.values())
    target = target_folder(raw_root, dataset_id, name, overwrite)
    with atomic_dir(target, "convert png2d", overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        mask_arrays = {}
        for case, image_path, mask_path in pairs:
            mask = read_natural(mask_path, mask=True)
            if mask.shape[:2] != images[case].shape[:2]:
                raise MedMambaError(f"{mask_path}: size {mask.shape[1]}x{mask.shape[0]} differs from "
                                    f"{image_path.name}'s {images[case].shape[1]}x{images[case].shape[0]}")
            mask_arrays[case] = mask
        lossy = {case for case, _, p in pairs if p.suffix.lower() in LOSSY_ENDINGS}
        if mapping is None:
            mapping = _inferred_colours(mask_arrays, lossy)
        for case, _, mask_path in tqdm(pairs, desc=f"writing {name}", unit="case"):
            tol = tolerance if tolerance is not None else (64 if case in lossy else 0)
            label = _snap_mask(mask_arrays[case], mapping, tol, mask_path)
            image = images[case]
            if rgb and image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            Image.fromarray(image).save(tmp / "imagesTr" / f"{case}_0000.png")
            Image.fromarray(label).save(tmp / "labelsTr" / f"{case}.png")
        names = labels or {("background" if i == 0 else f"label_{_fmt_value(v)}"): v for i, v in enumerate(mapping)}
        channel_names = {0: "R", 1: "G", 2: "B"} if rgb else {0: "grey"}
        write_dataset_json(tmp, channel_names, {n: mapping[_key(v)] for n, v in names.items()}, len(pairs), ".png",
                           name=name, converted_from=str(images_dir))
        if verify:
            verify_nnunet_dataset(tmp, shown_as=target)
    return target


def _inferred_colours(masks: dict[str, np.ndarray], lossy: set[str]) -> dict:
    if lossy:  # compression noise: binary masks only, thresholded
        return {0: 0, 255: 1}
    values = set()
    for mask in masks.values():
        flat = mask.reshape(-1, mask.shape[2]) if mask.ndim == 3 else mask.reshape(-1, 1)
        values.update(map(tuple, np.unique(flat, axis=0).tolist()))
    ordered = sorted(values, key=lambda v: (sum(v), v))
    return {(_key(v[0]) if len(v) == 1 else _key(v)): i for i, v in enumerate(ordered)}


def _snap_mask(mask: np.ndarray, mapping: dict, tolerance: int, path: Path) -> np.ndarray:
    """Map each pixel to the label of the nearest listed value/colour; error beyond ``tolerance``."""
    keys = list(mapping)
    colour = any(isinstance(k, tuple) for k in keys)
    if colour:
        pixels = (mask if mask.ndim == 3 else np.repeat(mask[..., None], 3, axis=2)).astype(np.int32)
        refs = np.array([k if isinstance(k, tuple) else (k, k, k) for k in keys], np.int32)
    else:
        if mask.ndim == 3:
            if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
                raise MedMambaError(f"{path}: colour mask, but the label mapping lists grey values (give colours)")
            mask = mask[..., 0]
        pixels = mask.astype(np.int32)[..., None]
        refs = np.array(keys, np.int32)[:, None]
    if len(mapping) == 2 and not colour and tolerance >= 64 and keys == [0, 255]:
        distance = None  # binary lossy mask: a threshold at the midpoint, never an error
        nearest = (pixels[..., 0] >= 128).astype(np.intp)
    else:
        diffs = np.abs(pixels[..., None, :] - refs[None, None]).max(axis=-1)
        nearest = diffs.argmin(axis=-1)
        distance = diffs.min(axis=-1)
    if distance is not None and (distance > tolerance).any():
        y, x = np.argwhere(distance > tolerance)[0]
        value = tuple(pixels[y, x].tolist()) if colour else int(pixels[y, x, 0])
        raise MedMambaError(f"{path}: unexpected mask value {value} at pixel (x={x}, y={y}) "
                            f"(expected {', '.join(_fmt_value(k) for k in keys)})")
    lut = np.array([mapping[k] for k in keys], np.uint8)
    return lut[nearest]


# ----------------------------------------------------------------------------------------------------------------
# label mappings


def _key(value) -> "int | tuple[int, ...]":
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value) if len(value) > 1 else int(value[0])
    return int(value)


def _fmt_value(value) -> str:
    return "-".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _value_mapping(labels: LabelMap | None) -> dict | None:
    """``{source value: consecutive label}`` from ``{name: source value}`` (first entry = background = 0)."""
    if labels is None:
        return None
    if not labels:
        raise MedMambaError("label mapping: empty")
    keys = [_key(v) for v in labels.values()]
    if len(set(keys)) != len(keys):
        raise MedMambaError(f"label mapping: a source value is listed twice in {dict(labels)}")
    return {k: i for i, k in enumerate(keys)}


def _inferred_mapping(values: list[int]) -> dict[int, int]:
    if 0 not in values:
        values = [0] + values  # background, even when no case shows it
    return {v: i for i, v in enumerate(sorted(values))}


def _apply_mapping(array: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = np.zeros(array.shape, np.uint8 if len(mapping) < 256 else np.uint16)
    for source, target in mapping.items():
        out[array == source] = target
    return out


# ----------------------------------------------------------------------------------------------------------------
# small helpers


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise MedMambaError(f"{path}: missing (an MSD task folder holds dataset.json, imagesTr, labelsTr)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MedMambaError(f"{path}: invalid JSON ({err})") from None


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MedMambaError(f"{path}: {what} file listed in dataset.json is missing")
    return path


def _stem(path: Path, endings: Sequence[str]) -> str:
    parts = split_ending(path, endings)
    if parts is None:
        raise MedMambaError(f"{path}: expected a NIfTI file ({', '.join(endings)})")
    return parts[0]
