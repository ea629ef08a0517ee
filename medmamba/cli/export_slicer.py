"""``medmamba export-slicer RESULTS -o model.zip``: package an nnU-Net results folder for 3D Slicer."""
from __future__ import annotations


def run(args) -> int:
    from medmamba.export.export import export_results

    manifest = export_results(args.results, args.output, folds=args.folds, checkpoint=args.checkpoint,
                              overwrite=args.overwrite)
    labels = ", ".join(label["name"] for label in manifest["labels"])
    print(f"wrote {args.output}: {manifest['trainer']} {manifest['configuration']}, folds {manifest['folds']}, "
          f"labels {labels}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-slicer", help="package an nnU-Net results folder as a model zip for 3D Slicer / medmamba predict",
        description="Package DatasetXXX_Name/Trainer__Plans__Configuration into a checksummed model zip.")
    parser.add_argument("results", help="nnU-Net results folder: DatasetXXX_Name/Trainer__Plans__Configuration")
    parser.add_argument("-o", "--output", required=True, help="model package to write (.zip)")
    parser.add_argument("--folds", nargs="+", default=None, help="folds to include (default: every trained fold)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)
