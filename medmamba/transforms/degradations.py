"""Restoration degradations as MONAI dictionary transforms.

Gaussian noise, Rician noise and blur come from MONAI; k-space undersampling (MONAI has the mask, not the
image-to-image degradation) and low-dose CT noise are ours, as ``MapTransform``s. Images are channel-first
(C, *spatial); 2D k-space undersampling and the CT sinogram act on the last two axes, per channel and slice.
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    GaussianSmoothd,
    MapTransform,
    RandGaussianNoised,
    RandomizableTransform,
    RandRicianNoised,
)

DEGRADATIONS = ("gaussian", "rician", "blur", "kspace", "lowdose_ct")


class KSpaceUndersampled(RandomizableTransform, MapTransform):
    """Retrospective MRI undersampling: FFT, keep a random (or equispaced) set of phase-encoding columns with a
    fully sampled centre, inverse FFT, magnitude. The mask comes from MONAI's ``RandomKspaceMask`` /
    ``EquispacedKspaceMask``; each channel is treated as its own single-coil image."""

    def __init__(self, keys: KeysCollection, acceleration: float = 4.0, center_fraction: float = 0.08,
                 equispaced: bool = False, allow_missing_keys: bool = False):
        from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        mask_cls = EquispacedKspaceMask if equispaced else RandomKspaceMask
        self.masker = mask_cls(center_fractions=[center_fraction], accelerations=[acceleration], spatial_dims=2,
                               is_complex=True)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data.fft_utils import fftn_centered

        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            kspace = fftn_centered(image.float().unsqueeze(-3), spatial_dims=2, is_complex=False)  # (C, coil, H, W, 2)
            _, magnitude = self.masker(kspace)
            d[key] = magnitude.to(image.dtype) if isinstance(d[key], torch.Tensor) else magnitude.numpy()
        return d


class LowDoseCTNoised(RandomizableTransform, MapTransform):
    """Low-dose CT noise on images in Hounsfield units: forward-project (Radon), draw Poisson photon counts at
    ``dose_fraction`` of a full-dose ``photons`` per ray, and add the filtered-back-projected difference between
    noisy and noise-free sinograms to the image (so only the noise changes, not the reconstruction blur)."""

    def __init__(self, keys: KeysCollection, dose_fraction: float = 0.25, photons: float = 1e5,
                 pixel_size_cm: float = 0.1, mu_water: float = 0.2, n_angles: int | None = None,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.dose_fraction, self.photons = dose_fraction, photons
        self.pixel_size_cm, self.mu_water, self.n_angles = pixel_size_cm, mu_water, n_angles

    def _noise_2d(self, hu: np.ndarray) -> np.ndarray:
        from skimage.transform import iradon, radon

        n_angles = self.n_angles or max(hu.shape)
        theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
        mu = np.clip(self.mu_water * (1.0 + hu / 1000.0), 0, None)
        sinogram = radon(mu * self.pixel_size_cm, theta=theta, circle=False)
        i0 = self.photons * self.dose_fraction
        counts = self.R.poisson(i0 * np.exp(-sinogram))
        noisy = -np.log(np.maximum(counts, 1) / i0)
        delta = iradon(noisy - sinogram, theta=theta, circle=False, output_size=max(hu.shape))
        delta = delta[: hu.shape[0], : hu.shape[1]] / self.pixel_size_cm
        return 1000.0 * delta / self.mu_water

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, np.float64)
            flat = array.reshape(-1, *array.shape[-2:])
            out = np.stack([s + self._noise_2d(s) for s in flat]).reshape(array.shape).astype(np.float32)
            d[key] = torch.as_tensor(out) if isinstance(image, torch.Tensor) else out
        return d


def restoration_degradation(name: str, keys: KeysCollection = ("image",), **params) -> Compose:
    """The degradation ``name`` (one of ``DEGRADATIONS``) as a MONAI pipeline on channel-first ``keys``.

    Parameters: gaussian/rician ``std`` (0.05, absolute), blur ``sigma`` (1.0 voxel), kspace ``acceleration``
    (4) / ``center_fraction`` (0.08) / ``equispaced`` (False), lowdose_ct ``dose_fraction`` (0.25) / ``photons``
    (1e5) on images in HU."""
    if name == "gaussian":
        t = RandGaussianNoised(keys, prob=1.0, mean=0.0, std=params.pop("std", 0.05), sample_std=False)
    elif name == "rician":
        t = RandRicianNoised(keys, prob=1.0, mean=0.0, std=params.pop("std", 0.05), sample_std=False)
    elif name == "blur":
        t = GaussianSmoothd(keys, sigma=params.pop("sigma", 1.0))
    elif name == "kspace":
        t = KSpaceUndersampled(keys, **{k: params.pop(k) for k in list(params)
                                        if k in ("acceleration", "center_fraction", "equispaced")})
    elif name == "lowdose_ct":
        t = LowDoseCTNoised(keys, **{k: params.pop(k) for k in list(params)
                                     if k in ("dose_fraction", "photons", "pixel_size_cm", "mu_water", "n_angles")})
    else:
        raise ValueError(f"unknown degradation {name!r}; choose one of {', '.join(DEGRADATIONS)}")
    if params:
        raise ValueError(f"degradation {name!r} takes no parameters {sorted(params)}")
    return Compose([t])


def degrade(image: np.ndarray, name: str, rng: np.random.Generator | None = None, **params) -> np.ndarray:
    """Apply ``restoration_degradation(name)`` to one channel-less numpy image, seeded from ``rng``."""
    rng = rng or np.random.default_rng(0)
    pipeline = restoration_degradation(name, **params)
    pipeline.set_random_state(seed=int(rng.integers(2**31)))
    out = pipeline({"image": torch.as_tensor(np.asarray(image, np.float32))[None]})["image"]
    return np.asarray(torch.as_tensor(out).detach().cpu())[0]
