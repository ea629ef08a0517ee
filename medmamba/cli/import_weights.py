"""``medmamba import-weights ENTRY CHECKPOINT -o OUT.safetensors``: an official checkpoint as our state dict."""
from __future__ import annotations


def run(args) -> int:
    import torch

    from medmamba.errors import MedMambaError
    from medmamba.registry import create_model, list_models
    from medmamba.weights import import_weights

    if args.entry not in list_models():
        raise MedMambaError(f"ENTRY {args.entry!r}: not a registered model (see `medmamba catalog`)")
    if args.output.suffix != ".safetensors":
        raise MedMambaError(f"-o {args.output}: the output is a .safetensors file")
    config = dict(preset=args.preset, spatial_dims=args.spatial_dims, in_channels=args.in_channels,
                  num_classes=args.num_classes)
    try:
        with torch.device("meta"):  # names and shapes are all the import needs
            model = create_model(args.entry, **config)
    except (ValueError, TypeError) as err:  # the model arguments do not fit the entry
        raise MedMambaError(f"{args.entry}: {err}") from None
    report = import_weights(args.entry, args.checkpoint, args.output, model=model, allow_partial=args.allow_partial,
                            overwrite=args.overwrite, **config)
    print(report.summary())
    if report.complete or args.allow_partial:
        print(f"wrote {args.output}" + ("" if report.complete else f" ({len(report.loaded)} tensors, partial)"))
        return 0
    print(f"nothing written: {len(report.missing)} of ours missing, {len(report.mismatched)} mismatched "
          "(--allow-partial writes the tensors that loaded)")
    return 1


def register(subparsers) -> None:
    from pathlib import Path

    parser = subparsers.add_parser(
        "import-weights", help="convert an official checkpoint to a medmamba state dict (.safetensors)",
        description="Read an official checkpoint (a state dict, or one under 'model', 'state_dict' or "
        "'network_weights'; loaded with torch.load(weights_only=True)), map its tensors to ENTRY's with the "
        "entry's checkpoint filter and write our state dict as safetensors. Prints what loaded, what of ours is "
        "missing, what of theirs is unused and any shape mismatch; exits 1 (writing nothing) when any of ours is "
        "missing or mismatched, unless --allow-partial.")
    parser.add_argument("entry", help="registry name, e.g. umamba_bot (see `medmamba catalog`)")
    parser.add_argument("checkpoint", type=Path, help="the official checkpoint (.pth / .pt / .ckpt)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="our state dict to write (.safetensors)")
    parser.add_argument("--preset", help="a preset of the entry the checkpoint was trained at (e.g. paper)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), help="default: the entry's first")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels of the checkpoint's model")
    parser.add_argument("--num-classes", type=int, help="output classes of the checkpoint's model")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the tensors that loaded even when some of ours are missing or mismatched")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.set_defaults(func=run)
