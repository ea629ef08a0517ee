"""csguoh/MambaIR: ``basicsr/archs/mambair_arch.py``'s MambaIR (the ECCV 2024 model, kept beside MambaIRv2) at the
colour Gaussian denoising configuration (``options/train/mambair/train_MambaIR_ColorDN_level15.yml``: upscale 1,
3 channels, embed 180, depths 6 x 6, mlp_ratio 1.2, img_range 1) on its 128 x 128 training patch; ours by the
``paper`` preset. The architecture file is imported on its own: ``basicsr``'s package imports OpenCV and its
training stack, the file needs only ``basicsr.utils.registry`` (a self-contained file of the checkout, loaded as
that module). A small 1-channel configuration (JPEG artifact removal's input: no mean shift) gives the key
fixture."""
from __future__ import annotations

import sys
import types
from pathlib import Path

from official import Case, Recipe, load_file, quietly

REPO = "csguoh/MambaIR"
FOLDER = "csguoh+MambaIR"
COLOR_DN = dict(upscale=1, in_chans=3, img_size=128, img_range=1.0, d_state=16, depths=[6] * 6, embed_dim=180,
                mlp_ratio=1.2)
SMALL = dict(upscale=1, in_chans=1, img_size=24, d_state=8, depths=[2, 1], embed_dim=60, mlp_ratio=1.2)


def mambair_arch(checkout: Path):
    """``basicsr/archs/mambair_arch.py``, with ``basicsr.utils.registry`` (and empty parent packages) bound first."""
    for package in ("basicsr", "basicsr.utils", "basicsr.archs"):
        module = types.ModuleType(package)
        module.__path__ = [str(checkout.joinpath(*package.split(".")))]
        sys.modules[package] = module
    load_file(checkout / "basicsr" / "utils" / "registry.py", "basicsr.utils.registry")
    return load_file(checkout / "basicsr" / "archs" / "mambair_arch.py", "basicsr.archs.mambair_arch")


def official_mambair(checkout: Path, **kwargs):
    return lambda: quietly(lambda: mambair_arch(checkout).MambaIR(**kwargs))


def cases(checkout: Path) -> list[Case]:
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 3}}
    small = {"create_model": {"spatial_dims": 2, "in_channels": 1, "embed_dim": 60, "depths": [2, 1], "d_state": 8,
                              "mlp_ratio": 1.2, "rgb_mean_shift": True}}
    return [Case("paper configuration (colour denoising, 128 x 128)", paper, (1, 3, 128, 128),
                 official_mambair(checkout, **COLOR_DN)),
            Case("small configuration, 1 channel", small, (2, 1, 24, 20), official_mambair(checkout, **SMALL),
                 key_fixture=True)]


RECIPE = Recipe("mambair", REPO, FOLDER, cases)
