"""Deterministic, seeded phantom data sets: nothing downloads, every call with the same seed gives the same files.

Arrays use numpy axis order throughout (``shape`` and ``spacing`` as (z, y, x) in 3D, (y, x) in 2D); the writers
convert to SimpleITK's (x, y, z) spacing.

Generators (arrays in memory)

- ``phantom_3d(shape, spacing, num_labels, seed)`` / ``phantom_2d(shape, num_labels, seed)``:
  ``(image float32, label uint8)``. A body ellipsoid holding ``num_labels`` organ-like structures (ellipsoids
  deformed by a smooth random field) that differ in appearance as organs do: each has its own intensity, and every
  other one a fine speckle texture; partial-volume edges (soft membership of the implicit surface), a mild smooth
  multiplicative MR-like bias field and Rician noise. A network that trains learns the labels from the image.
  Geometry is defined in physical units, so an anisotropic ``spacing`` samples the same anatomy more coarsely along
  that axis.
- ``classification_2d(shape, class_index, seed)``: one image whose class lies in its *structure* (one round
  lesion, one elongated lesion, a ring, scattered spots); every image is standardised to the same mean and
  standard deviation, so mean intensity carries no class information. ``CLASS_NAMES`` lists the classes.
- ``restoration_pair(shape, degradation, seed)``: ``(clean, degraded)`` float32 2D images, the degradation from
  ``medmamba.transforms.degradations`` (for ``lowdose_ct`` both in Hounsfield units).

Writers (files on disk, each written into a temporary folder and renamed when complete)

- ``write_nnunet_phantom_3d(raw_root, dataset_id, name, n_cases, shape, spacing, seed, num_labels=2)`` writes an
  nnU-Net v2 raw dataset ``raw_root/DatasetXXX_Name`` (``imagesTr/case_XXX_0000.nii.gz``, ``labelsTr``,
  ``dataset.json`` with ``channel_names``, ``labels``, ``numTraining``, ``file_ending``) and returns its path.
  Trainers, Slicer export and demo tests use it for tiny data sets, e.g.
  ``write_nnunet_phantom_3d(os.environ["nnUNet_raw"], 901, "Phantom", n_cases=3, shape=(32, 32, 32),
  spacing=(1.0, 1.0, 1.0), seed=0, num_labels=2)``.
- ``write_nnunet_phantom_2d(raw_root, dataset_id, name, n_cases, shape, seed, num_labels=2)``: the 2D version
  in nnU-Net's natural-image layout (``.png``; grey values 0..255, one channel).
- ``write_classification_2d(out_dir, n_per_class, shape, seed, num_classes=4, test_fraction=0.25)`` and
  ``write_restoration_pairs(out_dir, n_cases, shape, degradation, seed, test_fraction=0.25)``: the layouts that
  ``medmamba train cls`` / ``medmamba train restore`` read (see ``medmamba.training``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from medmamba.datasets.nnunet_raw import target_folder, write_dataset_json, write_sitk
from medmamba.io_utils import atomic_dir

CLASS_NAMES = ("round", "elongated", "ring", "spots")


# ----------------------------------------------------------------------------------------------------------------
# building blocks


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], coarse: int = 4) -> np.ndarray:
    """A smooth random field with zero mean and unit std: cubic upsampling of a coarse normal grid."""
    grid = rng.standard_normal([coarse] * len(shape))
    field = ndimage.zoom(grid, [s / coarse for s in shape], order=3, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _coordinates(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Physical coordinates normalised so the field of view spans [-1, 1] along its longest axis."""
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    half = extent.max() / 2
    axes = [((np.arange(n) + 0.5) * sp - e / 2) / half for n, sp, e in zip(shape, spacing, extent)]
    return np.meshgrid(*axes, indexing="ij")


def _implicit_ellipsoid(coords, center, radii, warp: np.ndarray | None = None) -> np.ndarray:
    """Negative inside, positive outside, ~ distance in units of the radius; ``warp`` deforms the surface."""
    r = np.sqrt(sum(((c - c0) / r0) ** 2 for c, c0, r0 in zip(coords, center, radii)))
    return r - 1.0 + (0.0 if warp is None else warp)


def _soft(implicit: np.ndarray, edge: float) -> np.ndarray:
    """Partial-volume membership: a logistic ramp about one voxel wide across the surface."""
    return (1.0 / (1.0 + np.exp(np.clip(implicit / edge, -50, 50)))).astype(np.float32)


def _fine_texture(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    """Speckle about a voxel in size, zero mean and unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 0.8)
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _bias_field(rng: np.random.Generator, shape: Sequence[int], strength: float = 0.2) -> np.ndarray:
    return np.exp(strength * _smooth_field(rng, shape, coarse=3)).astype(np.float32)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def _phantom(shape: Sequence[int], spacing: Sequence[float], num_labels: int, seed: int):
    ndim = len(shape)
    if num_labels < 1 or num_labels > 6:
        raise ValueError(f"num_labels must be in 1..6, got {num_labels}")
    rng = np.random.default_rng(seed)
    coords = _coordinates(shape, spacing)
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    fov = extent / extent.max()  # half-extent of the field of view per axis, in normalised units
    edge = 0.5 * float(min(spacing)) / (extent.max() / 2) / 0.3  # ~ one voxel, relative to a 0.3 radius

    body_radii = fov * rng.uniform(0.82, 0.9, ndim)
    body = _implicit_ellipsoid(coords, np.zeros(ndim), body_radii, 0.05 * _smooth_field(rng, shape))
    image = 0.25 * _soft(body, edge)
    label = np.zeros(shape, np.uint8)
    # Organs sit on a ring inside the body, at evenly spaced angles with a random phase; no two overlap.
    phase = rng.uniform(0, 2 * np.pi)
    for k in range(num_labels):
        angle = phase + 2 * np.pi * k / num_labels
        center = np.zeros(ndim)
        offset = 0.0 if num_labels == 1 else 0.45
        center[-1] = offset * body_radii[-1] * np.cos(angle)
        center[-2] = offset * body_radii[-2] * np.sin(angle)
        if ndim == 3:
            center[0] = rng.uniform(-0.15, 0.15) * body_radii[0]
        size = min(0.42, 0.5 * np.sin(np.pi / num_labels)) if num_labels > 1 else 0.45
        radii = size * body_radii * rng.uniform(0.7, 1.0, ndim)
        if ndim == 3:
            radii[0] = max(radii[0], 0.5 * body_radii[0])
        organ = _implicit_ellipsoid(coords, center, radii, 0.15 * _smooth_field(rng, shape))
        inside = (organ < 0) & (label == 0)
        label[inside] = k + 1
        intensity = 0.45 + 0.5 * (k + 1) / num_labels + rng.uniform(-0.05, 0.05)
        if k % 2:  # every other organ is textured (fine speckle), as parenchyma beside a fluid-filled organ
            intensity = intensity * (1 + 0.25 * _fine_texture(rng, shape))
        membership = _soft(organ, edge) * (body < 0)
        image = image * (1 - membership) + intensity * membership
    image *= _bias_field(rng, shape, strength=0.08)
    image = _rician(rng, image, sigma=0.04)
    return image.astype(np.float32), label


def phantom_3d(shape=(32, 32, 32), spacing=(1.0, 1.0, 1.0), num_labels: int = 2, seed: int = 0):
    """A 3D MR-like phantom ``(image, label)``; see the module docstring."""
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError("phantom_3d needs a 3D shape and spacing")
    return _phantom(shape, spacing, num_labels, seed)


def phantom_2d(shape=(64, 64), num_labels: int = 2, seed: int = 0, spacing=(1.0, 1.0)):
    """A 2D MR-like phantom ``(image, label)``; see the module docstring."""
    if len(shape) != 2:
        raise ValueError("phantom_2d needs a 2D shape")
    return _phantom(shape, spacing, num_labels, seed)


def classification_2d(shape=(32, 32), class_index: int = 0, seed: int = 0) -> np.ndarray:
    """One 2D image of class ``CLASS_NAMES[class_index]``, standardised to mean 0.5 and std 0.2."""
    rng = np.random.default_rng(seed)
    coords = _coordinates(shape, (1.0, 1.0))
    edge = 2.0 / max(shape) / 0.3
    background = 0.3 + 0.05 * _smooth_field(rng, shape)
    lesion = np.zeros(shape, np.float32)
    center = rng.uniform(-0.3, 0.3, 2)
    name = CLASS_NAMES[class_index]
    if name == "round":
        lesion = _soft(_implicit_ellipsoid(coords, center, [rng.uniform(0.3, 0.45)] * 2), edge)
    elif name == "elongated":
        theta = rng.uniform(0, np.pi)
        u = (coords[0] - center[0]) * np.cos(theta) + (coords[1] - center[1]) * np.sin(theta)
        v = -(coords[0] - center[0]) * np.sin(theta) + (coords[1] - center[1]) * np.cos(theta)
        lesion = _soft(_implicit_ellipsoid([u, v], [0, 0], [rng.uniform(0.55, 0.7), rng.uniform(0.1, 0.15)]), edge)
    elif name == "ring":
        r = rng.uniform(0.35, 0.5)
        outer = _implicit_ellipsoid(coords, center, [r, r])
        inner = _implicit_ellipsoid(coords, center, [0.6 * r, 0.6 * r])
        lesion = _soft(outer, edge) * (1 - _soft(inner, edge))
    elif name == "spots":
        for _ in range(rng.integers(5, 9)):
            c = rng.uniform(-0.75, 0.75, 2)
            lesion = np.maximum(lesion, _soft(_implicit_ellipsoid(coords, c, [rng.uniform(0.07, 0.11)] * 2), edge))
    else:
        raise ValueError(f"class_index must be < {len(CLASS_NAMES)}")
    image = background + rng.uniform(0.5, 0.8) * lesion + rng.normal(0, 0.05, shape)
    image = (image - image.mean()) / (image.std() + 1e-8)
    return (0.5 + 0.2 * image).astype(np.float32)


def restoration_pair(shape=(64, 64), degradation: str = "gaussian", seed: int = 0, **params):
    """``(clean, degraded)`` 2D float32 images: a phantom (no noise) and its degraded copy."""
    from medmamba.transforms.degradations import degrade

    rng = np.random.default_rng(seed)
    clean, _ = phantom_2d(shape, num_labels=int(rng.integers(2, 5)), seed=int(rng.integers(2**31)))
    clean = ndimage.gaussian_filter(clean, 0.6)  # the clean target carries (almost) no acquisition noise
    if degradation == "lowdose_ct":
        clean = 1000.0 * clean - 1000.0  # to Hounsfield units: 0 -> air, 1 -> water
    degraded = degrade(clean, degradation, rng=rng, **params)
    return clean, degraded.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# writers


def write_nnunet_phantom_3d(raw_root, dataset_id: int, name: str = "Phantom", n_cases: int = 3,
                            shape=(32, 32, 32), spacing=(1.0, 1.0, 1.0), seed: int = 0,
                            num_labels: int = 2, overwrite: bool = True) -> Path:
    """Write an nnU-Net v2 raw 3D phantom data set (MR, one channel); return its folder. ``overwrite``: take an id
    that another data set has, and write beside files in the folder that make-data did not write (``atomic_dir``)."""
    target = target_folder(raw_root, dataset_id, name, overwrite)
    labels = {"background": 0, **{f"organ{k}": k for k in range(1, num_labels + 1)}}
    with atomic_dir(target, "make-data seg3d", overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for i in range(n_cases):
            image, label = phantom_3d(shape, spacing, num_labels, seed=seed * 100003 + i)
            write_sitk(image, tmp / "imagesTr" / f"case_{i:03d}_0000.nii.gz", spacing)
            write_sitk(label, tmp / "labelsTr" / f"case_{i:03d}.nii.gz", spacing)
        write_dataset_json(tmp, {0: "MR"}, labels, n_cases, ".nii.gz", name=name,
                           description=f"medmamba 3D phantom, seed {seed}")
    return target


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image / 1.5 * 255), 0, 255).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def write_nnunet_phantom_2d(raw_root, dataset_id: int, name: str = "Phantom2D", n_cases: int = 4,
                            shape=(64, 64), seed: int = 0, num_labels: int = 2, overwrite: bool = True) -> Path:
    """Write an nnU-Net v2 raw 2D phantom data set in the natural-image (.png) layout; return its folder
    (``overwrite`` as in ``write_nnunet_phantom_3d``)."""
    target = target_folder(raw_root, dataset_id, name, overwrite)
    labels = {"background": 0, **{f"organ{k}": k for k in range(1, num_labels + 1)}}
    with atomic_dir(target, "make-data seg2d", overwrite) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for i in range(n_cases):
            image, label = phantom_2d(shape, num_labels, seed=seed * 100003 + i)
            _save_png(_to_uint8(image), tmp / "imagesTr" / f"case_{i:03d}_0000.png")
            _save_png(label, tmp / "labelsTr" / f"case_{i:03d}.png")
        write_dataset_json(tmp, {0: "MR"}, labels, n_cases, ".png", name=name,
                           description=f"medmamba 2D phantom, seed {seed}")
    return target


def _split(n: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of test cases: ``round(n * test_fraction)`` of them, at least one when the fraction is > 0."""
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[:n_test]] = True
    return mask


def write_classification_2d(out_dir, n_per_class: int = 8, shape=(32, 32), seed: int = 0, num_classes: int = 4,
                            test_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """Write a 2D classification set: ``{train,test}/images/<case>.nii.gz`` + ``labels.csv``; return ``out_dir``.
    ``overwrite``: write beside files in ``out_dir`` that make-data did not write (``medmamba.io_utils.atomic_dir``)."""
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in 2..{len(CLASS_NAMES)}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    classes = CLASS_NAMES[:num_classes]
    with atomic_dir(out_dir, "make-data cls2d", overwrite) as tmp:
        rows: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
        for c, cls in enumerate(classes):
            is_test = _split(n_per_class, test_fraction, rng)
            for i in range(n_per_class):
                split = "test" if is_test[i] else "train"
                case = f"{cls}_{i:03d}"
                image = classification_2d(shape, c, seed=int(rng.integers(2**31)))
                (tmp / split / "images").mkdir(parents=True, exist_ok=True)
                write_sitk(image, tmp / split / "images" / f"{case}.nii.gz", (1.0, 1.0))
                rows[split].append((case, cls))
        for split, split_rows in rows.items():
            if split_rows:
                _write_csv(tmp / split / "labels.csv", ["case", "label"], split_rows)
        (tmp / "dataset.json").write_text(json.dumps(
            {"task": "classification", "classes": list(classes), "file_ending": ".nii.gz",
             "description": f"medmamba 2D classification phantom, seed {seed}"}, indent=2))
    return out_dir


def write_restoration_pairs(out_dir, n_cases: int = 8, shape=(64, 64), degradation: str = "gaussian",
                            seed: int = 0, test_fraction: float = 0.25, overwrite: bool = False, **params) -> Path:
    """Write restoration pairs: ``{train,test}/{clean,degraded}/<case>.nii.gz``; return ``out_dir``
    (``overwrite`` as in ``write_classification_2d``)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    is_test = _split(n_cases, test_fraction, rng)
    with atomic_dir(out_dir, "make-data restore", overwrite) as tmp:
        for i in range(n_cases):
            split = "test" if is_test[i] else "train"
            clean, degraded = restoration_pair(shape, degradation, seed=int(rng.integers(2**31)), **params)
            for kind, array in (("clean", clean), ("degraded", degraded)):
                (tmp / split / kind).mkdir(parents=True, exist_ok=True)
                write_sitk(array, tmp / split / kind / f"case_{i:03d}.nii.gz", (1.0, 1.0))
        (tmp / "dataset.json").write_text(json.dumps(
            {"task": "restoration", "degradation": degradation, "params": params, "file_ending": ".nii.gz",
             "description": f"medmamba restoration phantom pairs, seed {seed}"}, indent=2))
    return out_dir


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
