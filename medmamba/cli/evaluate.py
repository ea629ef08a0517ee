"""``medmamba evaluate seg|cls|restore|efficiency``: metrics, tables and plots into an output folder."""
from __future__ import annotations

import argparse

from medmamba.cli._options import non_negative_int, positive_float, positive_int
from medmamba.io_utils import check_output_dir


def _seg(args) -> int:
    from medmamba.evaluation.segmentation import evaluate_segmentation, write_segmentation_outputs

    check_output_dir(args.output, "evaluate seg", args.overwrite)
    result = evaluate_segmentation(args.pred, args.ref, args.dataset_json, args.nsd_tolerance)
    write_segmentation_outputs(result, args.output, args.overwrite)
    _print_summary(result, "label", ("dice", "hd95", "nsd"))
    print(f"wrote {args.output}")
    return 0


def _cls(args) -> int:
    from medmamba.evaluation.classification import evaluate_classification, write_classification_outputs

    check_output_dir(args.output, "evaluate cls", args.overwrite)
    result = evaluate_classification(args.pred, args.ref)
    write_classification_outputs(result, args.output, args.overwrite)
    summary = result["summary"]
    print("  ".join(f"{k}={summary[k]:.4f}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
                    if summary[k] is not None))
    print(f"wrote {args.output}")
    return 0


def _restore(args) -> int:
    from medmamba.evaluation.restoration import evaluate_restoration, write_restoration_outputs

    check_output_dir(args.output, "evaluate restore", args.overwrite)
    result = evaluate_restoration(args.pred, args.ref, args.data_range)
    write_restoration_outputs(result, args.output, args.overwrite)
    _print_summary(result, "image", ("psnr", "ssim", "nmse"))
    print(f"wrote {args.output}")
    return 0


def _efficiency(args) -> int:
    from medmamba.evaluation.efficiency import run_sweep, write_sweep_outputs

    check_output_dir(args.output, "evaluate efficiency", args.overwrite)
    result = run_sweep(args.models, args.sizes, dims=args.dims, device=args.device, batch=args.batch,
                       in_channels=args.in_channels, out_channels=args.out_channels, preset=args.preset,
                       repeats=args.repeats, warmup=args.warmup, baselines=not args.no_baselines)
    write_sweep_outputs(result, args.output, args.overwrite)
    print(f"wrote {args.output}")
    return 0


def _print_summary(result, group: str, metrics) -> None:
    for name, per_metric in result["summary"].items():
        parts = [f"{m}={per_metric[m]['mean']:.4f}" if per_metric[m]["n"] else f"{m}=n/a" for m in metrics]
        print(f"{group} {name}: " + "  ".join(parts))


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="metrics for segmentation, classification, restoration; "
                                   "efficiency profiles")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    seg = tasks.add_parser("seg", help="Dice, IoU, HD95, ASSD, NSD, volume difference per case and label")
    seg.add_argument("--pred", required=True, help="folder of predicted label maps")
    seg.add_argument("--ref", required=True, help="folder of reference label maps (same case names)")
    seg.add_argument("--dataset-json", help="nnU-Net dataset.json naming the labels")
    seg.add_argument("--nsd-tolerance", type=positive_float, default=1.0, help="NSD tolerance in mm (default 1)")
    seg.add_argument("-o", "--output", required=True, help="output folder")
    seg.set_defaults(func=_seg)

    cls = tasks.add_parser("cls", help="accuracy, balanced accuracy, F1, per-class precision/recall, ROC AUC")
    cls.add_argument("--pred", required=True, help="predictions.csv: case, prob_<class>..., optional pred")
    cls.add_argument("--ref", required=True, help="labels.csv: case, label")
    cls.add_argument("-o", "--output", required=True, help="output folder")
    cls.set_defaults(func=_cls)

    res = tasks.add_parser("restore", help="PSNR, SSIM, NMSE per image")
    res.add_argument("--pred", required=True, help="folder of restored images")
    res.add_argument("--ref", required=True, help="folder of reference (clean) images")
    res.add_argument("--data-range", type=positive_float,
                     help="PSNR/SSIM data range (default: per reference, max - min)")
    res.add_argument("-o", "--output", required=True, help="output folder")
    res.set_defaults(func=_restore)

    eff = tasks.add_parser("efficiency", help="parameters, FLOPs (scans included), latency, peak memory vs size",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    eff.add_argument("--models", nargs="+", required=True,
                     help="registered model names (medmamba.list_models()), or the baselines plainconvunet, swinunetr")
    eff.add_argument("--sizes", nargs="+", type=positive_int, required=True, help="input edge lengths (voxels)")
    eff.add_argument("--dims", type=int, choices=(2, 3), default=3)
    eff.add_argument("--device", default="cpu")
    eff.add_argument("--batch", type=positive_int, default=1)
    eff.add_argument("--in-channels", type=positive_int, default=1)
    eff.add_argument("--out-channels", type=positive_int, default=2)
    eff.add_argument("--preset", help="registry preset for the medmamba models")
    eff.add_argument("--repeats", type=positive_int, default=5)
    eff.add_argument("--warmup", type=non_negative_int, default=1)
    eff.add_argument("--no-baselines", action="store_true", help="leave out the PlainConvUNet/SwinUNETR lines")
    eff.add_argument("-o", "--output", required=True, help="output folder")
    eff.set_defaults(func=_efficiency)
    for p in (seg, cls, res, eff):
        p.add_argument("--overwrite", action="store_true",
                       help="write into an output folder holding files this command did not write (none is deleted)")
