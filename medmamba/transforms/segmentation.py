"""Segmentation inference pre- and post-processing as MONAI pipelines that reproduce nnU-Net's own.

``segmentation_preprocessing(plans, dataset_json, configuration)`` turns ``{"image": [channel files]}`` (3D
NIfTI, one file per channel as in ``imagesTs``) into the array nnU-Net feeds its network: cropped to the
non-zero region, normalised per channel as the plans say (``CTNormalization``: clip to the foreground
0.5/99.5 percentiles, z-score with the foreground mean/std; ``ZScoreNormalization``; ``NoNormalization``;
``RescaleTo01Normalization``; ``RGBTo01Normalization``), resampled to the configuration's spacing exactly as
nnU-Net's default resampling does (cubic B-spline, separate nearest-neighbour resampling along a low-resolution
axis), and transposed to nnU-Net's axis order (numpy order, then ``transpose_forward``).

``segmentation_postprocessing(preprocessing)`` takes ``{"image": <preprocessed>, "pred": <network logits>}``
back to a label map on the input's voxel grid: MONAI's ``Invertd`` undoes the transpose, the resampling (linear,
as nnU-Net's ``resampling_fn_probabilities``) and the crop; then softmax and argmax.

One known difference: with ``use_mask_for_norm`` nnU-Net's mask is the hole-filled non-zero region, MONAI's
``NormalizeIntensity(nonzero=True)`` uses the non-zero voxels themselves; they differ only where an image has
zeros inside its foreground.
"""
from __future__ import annotations

import json
import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    MapTransform,
    NormalizeIntensity,
    ScaleIntensity,
    ScaleIntensityRange,
    SpatialResample,
    Transposed,
)
from monai.transforms.inverse import InvertibleTransform


def _load_json(value: dict | str | os.PathLike) -> dict:
    if isinstance(value, dict):
        return value
    with open(value, encoding="utf-8") as f:
        return json.load(f)


class ChannelWised(MapTransform):
    """Apply ``transforms[c]`` (MONAI array transforms) to channel ``c``: nnU-Net normalises each channel with
    its own scheme, MONAI's intensity transforms treat all channels alike."""

    def __init__(self, keys: KeysCollection, transforms: Sequence, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transforms = list(transforms)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] != len(self.transforms):
                raise ValueError(f"{key}: {image.shape[0]} channels, {len(self.transforms)} normalisations")
            channels = [t(image[c: c + 1]) for c, t in enumerate(self.transforms)]
            d[key] = torch.cat([torch.as_tensor(c, dtype=torch.float32) for c in channels], dim=0)
            if isinstance(image, MetaTensor):
                d[key] = MetaTensor(d[key], meta=image.meta, applied_operations=image.applied_operations)
        return d


def nnunet_normalization(scheme: str, use_mask: bool, intensity_properties: Mapping[str, float] | None):
    """The MONAI array transform equal to nnU-Net's normalisation class ``scheme`` for one channel."""
    if scheme == "CTNormalization":
        p = intensity_properties
        lo, hi, mean, std = p["percentile_00_5"], p["percentile_99_5"], p["mean"], max(p["std"], 1e-8)
        # clip to [lo, hi] and z-score: one linear map with clipping
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=(lo - mean) / std, b_max=(hi - mean) / std, clip=True,
                                   dtype=np.float32)
    if scheme == "ZScoreNormalization":
        return NormalizeIntensity(nonzero=use_mask, dtype=np.float32)
    if scheme == "NoNormalization":
        return lambda x: torch.as_tensor(x, dtype=torch.float32)
    if scheme == "RescaleTo01Normalization":
        return ScaleIntensity(minv=0.0, maxv=1.0, dtype=np.float32)
    if scheme == "RGBTo01Normalization":
        return ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, dtype=np.float32)
    raise ValueError(f"normalisation scheme {scheme!r} has no MONAI equivalent here")


def _spacing(image: MetaTensor) -> np.ndarray:
    affine = np.asarray(image.affine, dtype=np.float64)
    return np.linalg.norm(affine[:-1, :-1], axis=0)


def _resample_to_shape(image: MetaTensor, new_shape: Sequence[int], mode: int) -> MetaTensor:
    """Resample on nnU-Net's (skimage ``resize``) grid: voxel centres scaled by old/new shape, B-spline ``mode``."""
    dst_affine = _resampled_affine(image, new_shape)
    resample = SpatialResample(mode=int(mode), padding_mode="border", align_corners=False, dtype=torch.float64)
    out = resample(image, dst_affine=dst_affine, spatial_size=tuple(int(s) for s in new_shape))
    return out.float() if isinstance(out, MetaTensor) else out


def _clip_to_input_range(out: torch.Tensor, image: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """skimage's ``resize`` (nnU-Net's interpolator) clips spline overshoot to the input's range: per channel, or
    per slice along ``axis`` when nnU-Net resizes slice by slice."""
    dims = [d for d in range(1, image.ndim) if axis is None or d != 1 + axis]
    lo, hi = torch.amin(image, dim=dims, keepdim=True), torch.amax(image, dim=dims, keepdim=True)
    return torch.maximum(torch.minimum(out, hi.to(out.dtype)), lo.to(out.dtype))


def _nnunet_resample(image: MetaTensor, new_shape, current_spacing, new_spacing, order: int, order_z: int,
                     force_separate_z: bool | None) -> MetaTensor:
    """nnU-Net's ``resample_data_or_seg_to_shape`` (data and probabilities) with MONAI's ``SpatialResample``."""
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    new_shape = [int(s) for s in new_shape]
    if list(image.shape[1:]) == new_shape:
        return image
    separate, axis = determine_do_sep_z_and_axis(force_separate_z, current_spacing, new_spacing)
    if not separate:
        out = _resample_to_shape(image, new_shape, order)
        return _clip_to_input_range(out, image) if order > 0 else out
    in_plane = list(new_shape)
    in_plane[axis] = image.shape[1 + axis]
    out = _resample_to_shape(image, in_plane, order)  # identity along ``axis``: nnU-Net's per-slice 2D resize
    if order > 0:
        out = _clip_to_input_range(out, image, axis)
    return _resample_to_shape(out, new_shape, order_z) if in_plane != new_shape else out


class NnUNetResampled(MapTransform, InvertibleTransform):
    """nnU-Net's default resampling to ``target_spacing`` (per axis, in the image's axis order; 0 keeps an axis),
    invertible: ``inverse`` resamples back with the probabilities' interpolation (``inverse_order``)."""

    def __init__(self, keys: KeysCollection, target_spacing: Sequence[float], order: int = 3, order_z: int = 0,
                 force_separate_z: bool | None = None, inverse_order: int = 1, inverse_order_z: int = 0,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.target_spacing = [float(s) for s in target_spacing]
        self.order, self.order_z, self.force_separate_z = order, order_z, force_separate_z
        self.inverse_order, self.inverse_order_z = inverse_order, inverse_order_z

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            spacing = _spacing(image)
            target = [t if t > 0 else s for t, s in zip(self.target_spacing, spacing)]
            new_shape = compute_new_shape(image.shape[1:], spacing, target)
            out = _nnunet_resample(image, new_shape, spacing, target, self.order, self.order_z,
                                   self.force_separate_z)
            out = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=image.meta,
                             applied_operations=list(image.applied_operations))
            out.affine = _resampled_affine(image, new_shape)
            self.push_transform(out, orig_size=tuple(image.shape[1:]),
                                extra_info={"spacing": spacing.tolist(), "target": list(target)})
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            op = self.pop_transform(d[key])
            image = d[key]
            info = op["extra_info"]
            out = _nnunet_resample(image, op["orig_size"], info["target"], info["spacing"], self.inverse_order,
                                   self.inverse_order_z, self.force_separate_z)
            out = MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=image.meta,
                             applied_operations=list(image.applied_operations))
            out.affine = _resampled_affine(image, op["orig_size"])
            d[key] = out
        return d


def _resampled_affine(image: MetaTensor, new_shape) -> torch.Tensor:
    """The affine of ``image`` resampled to ``new_shape`` on skimage's grid (same field of view)."""
    shape = np.asarray(image.shape[1:], dtype=np.float64)
    scale = shape / np.asarray(new_shape, dtype=np.float64)
    grid = np.eye(len(shape) + 1)
    grid[:-1, :-1] = np.diag(scale)
    grid[:-1, -1] = (scale - 1) / 2
    return torch.as_tensor(np.asarray(image.affine, dtype=np.float64) @ grid)


def segmentation_preprocessing(plans: dict | str | os.PathLike, dataset_json: dict | str | os.PathLike,
                               configuration: str = "3d_fullres", keys: KeysCollection = ("image",),
                               load: bool = True) -> Compose:
    """MONAI pipeline reproducing nnU-Net's preprocessing of one case for ``configuration`` (see module doc)."""
    plans, dataset_json = _load_json(plans), _load_json(dataset_json)
    config = plans["configurations"][configuration]
    while "inherits_from" in config and "spacing" not in config:
        config = {**plans["configurations"][config["inherits_from"]], **config}
    channels = sorted(dataset_json["channel_names"], key=int)
    fg = plans["foreground_intensity_properties_per_channel"]
    normalizations = [
        nnunet_normalization(scheme, use_mask, fg.get(c))
        for c, scheme, use_mask in zip(channels, config["normalization_schemes"], config["use_mask_for_norm"])
    ]
    tf = list(plans["transpose_forward"])
    n = len(tf)
    # nnU-Net's arrays are numpy (z, y, x) = MONAI's (x, y, z) reversed; axis i after transpose_forward is
    # numpy axis tf[i] = MONAI axis n - 1 - tf[i]. A 2D configuration keeps the first transposed axis.
    spacing = list(config["spacing"])
    target = [0.0] * n
    for i, s in enumerate(([0.0] if len(spacing) < n else []) + spacing):
        target[n - 1 - tf[i]] = s
    data_kwargs = config.get("resampling_fn_data_kwargs", {})
    prob_kwargs = config.get("resampling_fn_probabilities_kwargs", {"order": 1, "order_z": 0})
    steps = [LoadImaged(keys, reader="NibabelReader", image_only=True), EnsureChannelFirstd(keys)] if load else []
    steps += [
        EnsureTyped(keys, dtype=torch.float32),
        CropForegroundd(keys, source_key=keys[0] if not isinstance(keys, str) else keys,
                        select_fn=lambda x: x != 0, margin=0, allow_smaller=True),
        ChannelWised(keys, normalizations),
        NnUNetResampled(keys, target, order=data_kwargs.get("order", 3), order_z=data_kwargs.get("order_z", 0),
                        force_separate_z=data_kwargs.get("force_separate_z"),
                        inverse_order=prob_kwargs.get("order", 1), inverse_order_z=prob_kwargs.get("order_z", 0)),
        Transposed(keys, indices=[0] + [1 + n - 1 - a for a in tf]),
    ]
    return Compose(steps)


def segmentation_postprocessing(preprocessing: Compose, pred_key: str = "pred", image_key: str = "image") -> Compose:
    """Network logits (in nnU-Net's layout) -> label map on the original voxel grid (channel-first, MONAI order)."""
    return Compose([
        Invertd(keys=pred_key, transform=preprocessing, orig_keys=image_key, nearest_interp=False,
                to_tensor=True),
        Activationsd(keys=pred_key, softmax=True),
        AsDiscreted(keys=pred_key, argmax=True),
    ])
