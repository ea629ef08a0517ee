"""``medmamba make-data seg3d|seg2d|cls2d|restore``: deterministic phantom data sets (nothing downloads)."""
from __future__ import annotations

import argparse
import os

from medmamba.cli._options import int_range, positive_float, positive_int
from medmamba.errors import MedMambaError

SHAPE = int_range(4, 1024)
SEED = int_range(0, 2**32 - 1)


def register(subparsers) -> None:
    parser = subparsers.add_parser("make-data", help="write a seeded phantom data set", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    def seg(p, shape, n_cases):
        p.add_argument("--id", type=int_range(1, 999), required=True, help="nnU-Net dataset id (1..999)")
        p.add_argument("--name", default=None, help="data set name (default: Phantom3D / Phantom2D)")
        p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
        p.add_argument("--cases", type=positive_int, default=n_cases)
        p.add_argument("--shape", type=SHAPE, nargs="+", default=shape, help="voxels, numpy order (z y x), 4..1024")
        p.add_argument("--labels", type=int_range(1, 6), default=2, help="number of foreground structures (1..6)")
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--overwrite", action="store_true",
                       help="use an id that another data set has, or write beside files in the data set folder "
                            "that make-data did not write (none of them is deleted)")

    p3 = kinds.add_parser("seg3d", help="3D MR-like phantom segmentation -> nnU-Net raw data set")
    seg(p3, [32, 32, 32], 8)
    p3.add_argument("--spacing", type=positive_float, nargs=3, default=[1.0, 1.0, 1.0], help="mm, numpy order (z y x)")
    p2 = kinds.add_parser("seg2d", help="2D phantom segmentation -> nnU-Net raw data set (.png)")
    seg(p2, [64, 64], 16)

    pc = kinds.add_parser("cls2d", help="2D classification set (class in the structure, not the mean intensity)")
    pc.add_argument("out", help="output folder")
    pc.add_argument("--per-class", type=positive_int, default=24)
    pc.add_argument("--classes", type=int_range(2, 4), default=4,
                    help="2..4: round, elongated, ring, spots")
    pc.add_argument("--shape", type=SHAPE, nargs=2, default=[32, 32])
    pc.add_argument("--seed", type=SEED, default=0)

    pr = kinds.add_parser("restore", help="2D restoration pairs (clean, degraded)")
    pr.add_argument("out", help="output folder")
    pr.add_argument("--cases", type=positive_int, default=32)
    pr.add_argument("--degradation", default="gaussian",
                    help="gaussian, rician, blur, kspace, lowdose_ct")
    pr.add_argument("--shape", type=SHAPE, nargs=2, default=[64, 64])
    pr.add_argument("--seed", type=SEED, default=0)
    for p in (pc, pr):
        p.add_argument("--overwrite", action="store_true",
                       help="write into an output folder holding files make-data did not write (none is deleted)")
    for p in (p3, p2, pc, pr):
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medmamba.datasets import phantom
    from medmamba.transforms.degradations import DEGRADATIONS

    if args.kind in ("seg3d", "seg2d"):
        raw = args.raw or os.environ.get("nnUNet_raw")
        if not raw:
            raise MedMambaError("nnUNet_raw: not set (give --raw or export nnUNet_raw)")
        dims = 3 if args.kind == "seg3d" else 2
        if len(args.shape) != dims:
            raise MedMambaError(f"--shape: {args.kind} needs {dims} sizes, got {len(args.shape)}")
        if args.kind == "seg3d":
            out = phantom.write_nnunet_phantom_3d(raw, args.id, args.name or "Phantom3D", args.cases,
                                                  tuple(args.shape), tuple(args.spacing), args.seed, args.labels,
                                                  overwrite=args.overwrite)
        else:
            out = phantom.write_nnunet_phantom_2d(raw, args.id, args.name or "Phantom2D", args.cases,
                                                  tuple(args.shape), args.seed, args.labels,
                                                  overwrite=args.overwrite)
    elif args.kind == "cls2d":
        out = phantom.write_classification_2d(args.out, args.per_class, tuple(args.shape), args.seed, args.classes,
                                              overwrite=args.overwrite)
    else:
        if args.degradation not in DEGRADATIONS:
            raise MedMambaError(f"--degradation {args.degradation!r}: choose one of {', '.join(DEGRADATIONS)}")
        out = phantom.write_restoration_pairs(args.out, args.cases, tuple(args.shape), args.degradation, args.seed,
                                              overwrite=args.overwrite)
    print(out)
    return 0
