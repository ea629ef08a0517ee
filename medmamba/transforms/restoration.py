"""Restoration pipelines (MONAI dictionary transforms): ``{"target": clean path[, "image": degraded path]}`` ->
``image`` (network input) and ``target`` (clean), both channel-first and scaled as ``(x - shift) / scale``."""
from __future__ import annotations

from typing import Sequence

import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    RandFlipd,
    RandSpatialCropd,
)

from medmamba.transforms.degradations import restoration_degradation


def _load(keys: Sequence[str]) -> list:
    return [
        LoadImaged(list(keys), image_only=True),
        EnsureChannelFirstd(list(keys)),
        EnsureTyped(list(keys), dtype=torch.float32, track_meta=False),
    ]


def _scale(shift: float, scale: float) -> NormalizeIntensityd:
    return NormalizeIntensityd(["image", "target"], subtrahend=shift, divisor=scale)


def restoration_train_transforms(degradation: str | None, patch_size: Sequence[int], shift: float = 0.0,
                                 scale: float = 1.0, **params) -> Compose:
    """Clean image -> (degraded with ``degradation`` on the fly, clean), or loaded pairs when ``degradation`` is
    None; then one random patch and flips applied alike to both."""
    if degradation is None:
        steps = _load(["image", "target"])
    else:
        steps = _load(["target"]) + [CopyItemsd("target", names="image"),
                                     *restoration_degradation(degradation, keys=("image",), **params).transforms]
    return Compose(steps + [
        _scale(shift, scale),
        RandSpatialCropd(["image", "target"], roi_size=tuple(patch_size), random_size=False),
        RandFlipd(["image", "target"], prob=0.5, spatial_axis=0),
        RandFlipd(["image", "target"], prob=0.5, spatial_axis=1),
    ])


def restoration_eval_transforms(degradation: str | None, shift: float = 0.0, scale: float = 1.0,
                                **params) -> Compose:
    """Whole images: loaded pairs (``degradation`` None) or the clean image degraded (seed it for repeatability)."""
    if degradation is None:
        steps = _load(["image", "target"])
    else:
        steps = _load(["target"]) + [CopyItemsd("target", names="image"),
                                     *restoration_degradation(degradation, keys=("image",), **params).transforms]
    return Compose(steps + [_scale(shift, scale)])
