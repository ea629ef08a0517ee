"""``medmamba predict --model model.zip -i IMAGE_OR_FOLDER -o OUT``: segment with a model package."""
from __future__ import annotations


def run(args) -> int:
    from medmamba.export.predict import predict

    written = predict(args.model, args.input, args.output, fmt=args.format, device=args.device, folds=args.folds,
                      overwrite=args.overwrite)
    for path in written:
        print(path)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="segment images with a model package (from medmamba export-slicer)",
        description="Segment an image, or every image in a folder, with nnU-Net's sliding-window predictor.")
    parser.add_argument("--model", required=True, help="model package (.zip)")
    parser.add_argument("-i", "--input", required=True, help="image, or folder of images (CASE_XXXX naming for "
                                                             "multi-channel models)")
    parser.add_argument("-o", "--output", required=True, help="output file (single image, ending .seg.nrrd or "
                                                              ".nii.gz) or folder")
    parser.add_argument("--format", choices=["seg.nrrd", "nii.gz"], default=None,
                        help="output format (default: from the output name, else seg.nrrd)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--folds", nargs="+", default=None, help="subset of the package's folds (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file, or write into an output folder holding files predict "
                             "did not write (none of them is deleted)")
    parser.set_defaults(func=run)
