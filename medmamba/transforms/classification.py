"""Classification pipelines (MONAI dictionary transforms) for 2D images: ``{"image": path, "label": int}``."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    Resized,
)


def _load_and_normalise(spatial_size: Sequence[int]) -> list:
    return [
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
        NormalizeIntensityd("image", channel_wise=True),
        Resized("image", spatial_size=tuple(spatial_size), mode="bilinear", anti_aliasing=False),
    ]


def classification_train_transforms(spatial_size: Sequence[int] = (32, 32)) -> Compose:
    """Load, per-image z-score, resize, then flips, 90-degree rotations, a small affine and Gaussian noise."""
    return Compose(_load_and_normalise(spatial_size) + [
        RandFlipd("image", prob=0.5, spatial_axis=0),
        RandFlipd("image", prob=0.5, spatial_axis=1),
        RandRotate90d("image", prob=0.5),
        RandAffined("image", prob=0.5, rotate_range=np.pi / 12, scale_range=0.1, padding_mode="border"),
        RandGaussianNoised("image", prob=0.2, std=0.05),
    ])


def classification_eval_transforms(spatial_size: Sequence[int] = (32, 32)) -> Compose:
    """Load, per-image z-score, resize: the deterministic part of the training pipeline."""
    return Compose(_load_and_normalise(spatial_size))
