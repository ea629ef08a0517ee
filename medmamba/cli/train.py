"""``medmamba train cls|restore``: train a registered 2D classifier or restoration net (formats:
``medmamba.training``)."""
from __future__ import annotations

import argparse

from medmamba.cli._options import fraction, int_range, non_negative_int, positive_float, positive_int
from medmamba.errors import MedMambaError

SIZE = int_range(4, 4096)
TASKS = {"cls": "classification", "restore": "restoration"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a classification or restoration model", description=__doc__)
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    def common(p, model, batch_size, lr):
        p.add_argument("--model", default=model, help=f"registered model name (default {model})")
        p.add_argument("--preset", default=None, help="model preset, e.g. tiny or paper")
        p.add_argument("--data", required=True, help="data folder (layout: medmamba.training)")
        p.add_argument("--out", required=True, help="output folder: checkpoints, history, predictions")
        p.add_argument("--epochs", type=positive_int, default=10)
        p.add_argument("--batch-size", type=positive_int, default=batch_size)
        p.add_argument("--lr", type=positive_float, default=lr)
        p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
        p.add_argument("--val-fraction", type=fraction, default=0.2,
                       help="share of train/ held out for validation, in [0, 1)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        p.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
        p.add_argument("--workers", type=non_negative_int, default=0, help="data loader processes")
        p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_latest.pt")
        p.add_argument("--overwrite", action="store_true",
                       help="start an earlier run in OUT over, or write beside files in OUT that training did not "
                            "write (none of them is deleted)")
        p.set_defaults(func=run)

    cls = tasks.add_parser("cls", help="2D image classification")
    common(cls, "medmamba_t", 16, 1e-3)
    cls.add_argument("--size", type=SIZE, nargs=2, default=None, help="resize images to H W (default: first image)")
    res = tasks.add_parser("restore", help="2D image restoration")
    common(res, "mambair", 8, 2e-4)
    res.add_argument("--degradation", default=None,
                     help="degrade clean images on the fly: gaussian, rician, blur, kspace, lowdose_ct "
                          "(default: use the stored degraded images)")
    res.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="degradation parameter, e.g. std=0.05 or acceleration=4 (repeat)")
    res.add_argument("--patch", type=SIZE, nargs=2, default=None, help="training patch H W (default 48 48)")


def _params(items: list[str]) -> dict:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise MedMambaError(f"--param {item!r}: expected NAME=VALUE")
        if value.lower() in ("true", "false"):
            params[name] = value.lower() == "true"
            continue
        try:
            params[name] = float(value)
        except ValueError:
            raise MedMambaError(f"--param {item!r}: VALUE must be a number or true/false") from None
    return params


def run(args: argparse.Namespace) -> int:
    from medmamba import model_entry
    from medmamba.training import train_classifier, train_restoration

    try:
        entry = model_entry(args.model)
    except KeyError as err:
        raise MedMambaError(f"--model: {err.args[0]}") from None
    if entry.task != TASKS[args.task] or 2 not in entry.spatial_dims:
        raise MedMambaError(f"--model {args.model}: a {entry.task} model for {'/'.join(map(str, entry.spatial_dims))}D"
                            f" images; `train {args.task}` needs a 2D {TASKS[args.task]} model")
    if args.preset is not None and args.preset not in entry.presets:
        raise MedMambaError(f"--preset {args.preset}: {args.model} has the presets "
                            f"{', '.join(entry.presets) or 'none'}")
    common = dict(model=args.model, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, val_fraction=args.val_fraction, device=args.device, amp=not args.no_amp,
                  workers=args.workers, resume=args.resume, overwrite=args.overwrite)
    if args.task == "cls":
        last = train_classifier(args.data, args.out, spatial_size=args.size, **common)
    else:
        last = train_restoration(args.data, args.out, degradation=args.degradation, patch_size=args.patch,
                                 **common, **_params(args.param))
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    return 0
