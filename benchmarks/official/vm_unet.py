"""JCruan519/VM-UNet: ``models/vmunet/vmamba.py``'s VSSM at the configuration of ``configs/config_setting.py``
(depths [2, 2, 2, 2], depths_decoder [2, 2, 2, 1], 3 input channels, 1 class) on the paper's 256 x 256 ISIC input;
ours by the ``paper`` preset. VMUNet, the repository's top-level class, wraps that VSSM as ``vmunet`` and only adds
a sigmoid for one class: its checkpoints carry the ``vmunet.`` prefix, which our filter accepts too. A small
configuration gives the key fixture."""
from __future__ import annotations

from pathlib import Path

from official import Case, Recipe, quietly
from official._vssm import import_from_checkout

REPO = "JCruan519/VM-UNet"
FOLDER = "JCruan519+VM-UNet"
SMALL = dict(dims=[16, 32, 64, 128], depths=[1, 2, 1, 1], depths_decoder=[1, 1, 2, 1])


def vssm(checkout: Path, dims=(96, 192, 384, 768), depths=(2, 2, 2, 2), depths_decoder=(2, 2, 2, 1)):
    def build():
        module = import_from_checkout(checkout, "models.vmunet.vmamba")
        return quietly(lambda: module.VSSM(in_chans=3, num_classes=1, dims=list(dims), dims_decoder=list(dims)[::-1],
                                           depths=list(depths), depths_decoder=list(depths_decoder),
                                           drop_path_rate=0.2))

    return build


def cases(checkout: Path) -> list[Case]:
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 3, "num_classes": 1}}
    small = {"create_model": {"spatial_dims": 2, "in_channels": 3, "num_classes": 1, "features": SMALL["dims"],
                              "strides": [4, 2, 2, 2], "depths": SMALL["depths"],
                              "decoder_depths": SMALL["depths_decoder"], "expand": 2}}
    return [Case("paper configuration (ISIC, 256 x 256)", paper, (1, 3, 256, 256), vssm(checkout)),
            Case("small configuration", small, (2, 3, 64, 96), vssm(checkout, **SMALL), key_fixture=True)]


RECIPE = Recipe("vm_unet", REPO, FOLDER, cases)
