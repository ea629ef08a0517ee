"""``medmamba train cls|restore``: train a registered 2D classifier or restoration net (formats:
``medmamba.training``)."""
from __future__ import annotations

import argparse

from medmamba.errors import MedMambaError


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a classification or restoration model", description=__doc__)
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    def common(p, model, batch_size, lr):
        p.add_argument("--model", default=model, help=f"registered model name (default {model})")
        p.add_argument("--preset", default=None, help="model preset, e.g. tiny or paper")
        p.add_argument("--data", required=True, help="data folder (layout: medmamba.training)")
        p.add_argument("--out", required=True, help="output folder: checkpoints, history, predictions")
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--batch-size", type=int, default=batch_size)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--val-fraction", type=float, default=0.2, help="share of train/ held out for validation")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
        p.add_argument("--no-amp", action="store_true", help="full precision on CUDA")
        p.add_argument("--workers", type=int, default=0, help="data loader processes")
        p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_latest.pt")
        p.set_defaults(func=run)

    cls = tasks.add_parser("cls", help="2D image classification")
    common(cls, "medmamba_t", 16, 1e-3)
    cls.add_argument("--size", type=int, nargs=2, default=None, help="resize images to H W (default: first image)")
    res = tasks.add_parser("restore", help="2D image restoration")
    common(res, "mambair", 8, 2e-4)
    res.add_argument("--degradation", default=None,
                     help="degrade clean images on the fly: gaussian, rician, blur, kspace, lowdose_ct "
                          "(default: use the stored degraded images)")
    res.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="degradation parameter, e.g. std=0.05 or acceleration=4 (repeat)")
    res.add_argument("--patch", type=int, nargs=2, default=None, help="training patch H W (default 48 48)")


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
    from medmamba.training import train_classifier, train_restoration

    try:
        from medmamba import model_entry

        model_entry(args.model)
    except KeyError as err:
        raise MedMambaError(f"--model: {err.args[0]}") from None
    common = dict(model=args.model, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  seed=args.seed, val_fraction=args.val_fraction, device=args.device, amp=not args.no_amp,
                  workers=args.workers, resume=args.resume)
    if args.task == "cls":
        last = train_classifier(args.data, args.out, spatial_size=args.size, **common)
    else:
        try:
            last = train_restoration(args.data, args.out, degradation=args.degradation, patch_size=args.patch,
                                     **common, **_params(args.param))
        except ValueError as err:  # a degradation parameter the degradation does not take
            raise MedMambaError(f"--param: {err}") from None
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    return 0
