"""PixDeep/MHS-VM: ``models/vmunet/vmamba.py``'s VSSM with the multi-head scan (``models/vmunet/mhsm.py``) at the
published ISIC2018 model's configuration (``configs/config_setting.py``: VM-UNet's depths, 4 heads; ``test.py``:
gfu_t 0.4) on the paper's 256 x 256 input, its scan routes made by the repository's ``routegen.calc_posarrays``;
ours by the ``paper`` preset. Before the networks, every route of the four patterns is checked against the
official route tables at each stage's grid. A small configuration (3 heads) gives the key fixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from official import Case, Recipe, quietly
from official._vssm import cuda_means_cpu, import_from_checkout

REPO = "PixDeep/MHS-VM"
FOLDER = "PixDeep+MHS-VM"
SMALL = dict(dims=[24, 48, 96, 192], depths=[1, 2, 1, 1], depths_decoder=[1, 1, 2, 1])


def check_routes(route_tables: list[dict], size: int) -> None:
    """Our routes (``medmamba.kernels.mhs_routes``) against the official tables: per stage, per pattern, the two
    routes' visiting orders and their inverses; the four sequences are [route, reversed, route, reversed]."""
    from medmamba.kernels import mhs_routes, route_positions

    for stage, table in enumerate(route_tables):
        tables = table[f"layer_{stage}.cxsz_tpinds"].numpy()  # (8 routes, [visit order, inverse], L)
        side = size // 4 // 2 ** stage
        for p, pattern in enumerate("CXSZ"):
            ours = [route_positions(r, (side, side)) for r in mhs_routes(pattern, 2)]
            for r in range(2):
                order, inverse = tables[2 * p + r]
                if not (np.array_equal(ours[2 * r], order) and np.array_equal(ours[2 * r + 1], order[::-1])
                        and np.array_equal(np.argsort(ours[2 * r]), inverse)):
                    raise AssertionError(f"route {r} of pattern {pattern} differs from the official table at "
                                         f"{side} x {side}")


def vssm(checkout: Path, size: int, heads: int, gfu_t: float, dims=(96, 192, 384, 768), depths=(2, 2, 2, 2),
         depths_decoder=(2, 2, 2, 1)):
    def build():
        routegen = import_from_checkout(checkout, "routegen")
        tables = quietly(lambda: routegen.calc_posarrays(size, size, len(dims)))
        check_routes(tables, size)
        module = import_from_checkout(checkout, "models.vmunet.vmamba")
        with cuda_means_cpu():
            return quietly(lambda: module.VSSM(
                in_chans=3, num_classes=1, dims=list(dims), dims_decoder=list(dims)[::-1], depths=list(depths),
                depths_decoder=list(depths_decoder), drop_path_rate=0.2,
                para_dict={"head_num": heads, "gfu_t": gfu_t, "with_proj": True}, route_dict=tables))

    return build


def cases(checkout: Path) -> list[Case]:
    paper = {"create_model": {"preset": "paper", "spatial_dims": 2, "in_channels": 3, "num_classes": 1}}
    small = {"create_model": {"spatial_dims": 2, "in_channels": 3, "num_classes": 1, "features": SMALL["dims"],
                              "strides": [4, 2, 2, 2], "depths": SMALL["depths"],
                              "decoder_depths": SMALL["depths_decoder"], "num_heads": 3, "gfu_t": 0.0}}
    return [Case("paper configuration (ISIC2018 model, 256 x 256)", paper, (1, 3, 256, 256),
                 vssm(checkout, 256, heads=4, gfu_t=0.4)),
            Case("small configuration, 3 heads", small, (2, 3, 64, 64), vssm(checkout, 64, heads=3, gfu_t=0.0, **SMALL),
                 key_fixture=True)]


RECIPE = Recipe("mhs_vm_unet", REPO, FOLDER, cases)
