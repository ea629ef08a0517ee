"""ge-xing/SegMamba: ``model_segmamba/segmamba.py``'s ``SegMamba`` as ``3_train.py`` builds it (4 input channels,
4 classes, depths [2, 2, 2, 2], feat_size [48, 96, 192, 384]) on the paper's 128^3 BraTS crop; ours by the
``paper`` preset. A smaller configuration on a 128 x 32 x 32 input gives the key fixture: the official Mamba cuts
its stages' sequences into 64, 32, 16 and 8 slices (``num_slices_list``), the inter-slice route only where the
stages are 64, 32, 16 and 8 deep, i.e. for inputs 128 deep. The output block's width is fixed at 48
(``UnetOutBlock(in_channels=48)``), so ``feat_size[0]`` stays 48.

The model file is loaded on its own (``load_file``); its ``monai`` imports resolve to the installed MONAI, whose
``dynunet_block.py`` and ``unetr_block.py`` are identical to the copy the repository carries in ``monai/``."""
from __future__ import annotations

from pathlib import Path

from official import Case, Recipe, load_file

REPO = "ge-xing/SegMamba"
FOLDER = "ge-xing+SegMamba"
SMALL = dict(in_chans=1, out_chans=2, depths=[1, 2, 1, 1], feat_size=[48, 64, 96, 128], hidden_size=192)


def official(checkout: Path, **config):
    def build():
        module = load_file(checkout / "model_segmamba" / "segmamba.py", "official_segmamba.segmamba")
        return module.SegMamba(**config)

    return build


def cases(checkout: Path) -> list[Case]:
    paper = {"create_model": {"preset": "paper", "spatial_dims": 3, "in_channels": 4, "num_classes": 4}}
    small = {"create_model": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2,
                              "features": SMALL["feat_size"] + [SMALL["hidden_size"]], "strides": [1, 2, 2, 2, 2],
                              "depths": SMALL["depths"]}}
    return [Case("paper configuration (BraTS 2023, 4 x 128^3)", paper, (1, 4, 128, 128, 128),
                 official(checkout, in_chans=4, out_chans=4, depths=[2, 2, 2, 2], feat_size=[48, 96, 192, 384])),
            Case("small configuration", small, (2, 1, 128, 32, 32), official(checkout, **SMALL), key_fixture=True)]


RECIPE = Recipe("segmamba", REPO, FOLDER, cases)
