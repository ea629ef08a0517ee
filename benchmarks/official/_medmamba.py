"""Shared by the MedMamba recipes (medmamba_t, medmamba_s, medmamba_b): YubiaoYue/MedMamba's ``MedMamba.py`` ends by
building T, S and B with ``.to("cuda")`` and running one on a CUDA tensor at import. Only the definitions above
that tail (up to the line ``medmamba_t = VSSM(``) are executed, as a module of their own; the classes are the
official ones, nothing else is changed."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import torch.nn as nn

from official import Case, quietly

REPO = "YubiaoYue/MedMamba"
FOLDER = "YubiaoYue+MedMamba"
TAIL = "\nmedmamba_t = VSSM("
# what MedMamba.py's tail builds (depths, dims), 6 classes
CONFIGURATIONS = {"medmamba_t": ([2, 2, 4, 2], [96, 192, 384, 768]),
                  "medmamba_s": ([2, 2, 8, 2], [96, 192, 384, 768]),
                  "medmamba_b": ([2, 2, 12, 2], [128, 256, 512, 1024])}
SMALL = dict(depths=[1, 2], dims=[16, 32])


def import_definitions(checkout: Path) -> types.ModuleType:
    """MedMamba.py's definitions (everything before its CUDA tail) as the module ``official_medmamba``."""
    path = checkout / "MedMamba.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the checkout")
    source = path.read_text(encoding="utf-8")
    if TAIL not in source:
        raise ValueError(f"{path}: no line starting with {TAIL.strip()!r}: the file changed, update the recipe")
    module = types.ModuleType("official_medmamba")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    exec(compile(source[:source.index(TAIL)], str(path), "exec"), module.__dict__)  # noqa: S102 - the checkout
    return module


def vssm(checkout: Path, depths, dims, num_classes: int, in_chans: int = 3):
    def build() -> nn.Module:
        module = import_definitions(checkout)
        return quietly(lambda: module.VSSM(in_chans=in_chans, num_classes=num_classes, depths=list(depths),
                                           dims=list(dims)))

    return build


def cases(checkout: Path, entry: str) -> list[Case]:
    """The paper configuration at 224 x 224 RGB, 6 classes; a small one (2 stages, 1 channel) for the key fixture."""
    depths, dims = CONFIGURATIONS[entry]
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 3, "num_classes": 6}}
    small = {"create_model": {"spatial_dims": 2, "in_channels": 1, "num_classes": 3, "depths": SMALL["depths"],
                              "dims": SMALL["dims"]}}
    return [Case(f"paper configuration (depths {depths}, dims {dims[0]}-{dims[-1]}, 224 x 224 RGB, 6 classes)",
                 paper, (1, 3, 224, 224), vssm(checkout, depths, dims, 6)),
            Case("small configuration", small, (2, 1, 64, 96), vssm(checkout, num_classes=3, in_chans=1, **SMALL),
                 key_fixture=True)]
