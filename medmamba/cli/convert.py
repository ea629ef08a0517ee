"""``medmamba convert msd|folder|png2d``: data in the field's layouts -> an nnU-Net v2 raw data set."""
from __future__ import annotations

import argparse
import os

from medmamba.cli._options import int_range
from medmamba.errors import MedMambaError


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert a data set to nnU-Net's raw format",
                                   description=__doc__)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    def common(p):
        p.add_argument("--id", type=int_range(1, 999), required=True, help="nnU-Net dataset id (1..999)")
        p.add_argument("--raw", default=None, help="nnU-Net raw folder (default: $nnUNet_raw)")
        p.add_argument("--overwrite", action="store_true",
                       help="use an id that another data set has, replace this command's earlier conversion, or "
                            "write beside files in the data set folder it did not write (none of them is deleted)")
        p.add_argument("--no-verify", action="store_true", help="skip nnU-Net's integrity check")
        p.set_defaults(func=run)

    msd = kinds.add_parser("msd", help="a Medical Segmentation Decathlon TaskXX_Name folder")
    msd.add_argument("task_dir")
    msd.add_argument("--name", default=None, help="data set name (default: from TaskXX_Name)")
    common(msd)

    folder = kinds.add_parser("folder", help="images and labels (NIfTI, NRRD, MHA, DICOM series) matched by stem")
    folder.add_argument("--images", required=True)
    folder.add_argument("--labels", required=True)
    folder.add_argument("--name", required=True)
    folder.add_argument("--channels", nargs="+", default=["MR"],
                        help="channel names; images are <case>_<channel>.<ext> or <case>_<0000>.<ext>")
    folder.add_argument("--label", action="append", metavar="NAME=VALUE", dest="label_map",
                        help="label name and its value in the label files, background first (repeat)")
    common(folder)

    png = kinds.add_parser("png2d", help="2D PNG/JPEG images and masks (ISIC, Kvasir)")
    png.add_argument("--images", required=True)
    png.add_argument("--masks", required=True)
    png.add_argument("--name", required=True)
    png.add_argument("--mask-suffix", default="", help="e.g. _segmentation for ISIC")
    png.add_argument("--label", action="append", metavar="NAME=VALUE|R,G,B", dest="label_map",
                     help="label name and its grey value or colour in the masks, background first (repeat)")
    png.add_argument("--tolerance", type=int_range(0, 255), default=None,
                     help="max channel difference when snapping colours (0..255)")
    common(png)


def parse_label_map(items: list[str] | None) -> dict | None:
    if not items:
        return None
    mapping = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            parts = tuple(int(v) for v in value.split(","))
        except ValueError:
            parts = ()
        if not sep or not name or len(parts) not in (1, 3):
            raise MedMambaError(f"--label {item!r}: expected NAME=VALUE or NAME=R,G,B")
        mapping[name] = parts[0] if len(parts) == 1 else parts
    return mapping


def run(args: argparse.Namespace) -> int:
    from medmamba.datasets import converters

    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise MedMambaError("nnUNet_raw: not set (give --raw or export nnUNet_raw)")
    opts = dict(raw_root=raw, dataset_id=args.id, overwrite=args.overwrite, verify=not args.no_verify)
    if args.kind == "msd":
        out = converters.convert_msd(args.task_dir, name=args.name, **opts)
    elif args.kind == "folder":
        out = converters.convert_folder(args.images, args.labels, name=args.name, channels=args.channels,
                                        labels=parse_label_map(args.label_map), **opts)
    else:
        out = converters.convert_png2d(args.images, args.masks, name=args.name, mask_suffix=args.mask_suffix,
                                       labels=parse_label_map(args.label_map), tolerance=args.tolerance, **opts)
    print(out)
    return 0
