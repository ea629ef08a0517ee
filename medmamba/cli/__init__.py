"""The ``medmamba`` command: one parser, a subcommand per module in this package.

Each module ``medmamba/cli/<name>.py`` defines ``register(subparsers)``, which adds its
subparser and sets ``func`` (a callable taking the parsed args and returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from medmamba._version import __version__
from medmamba.errors import MedMambaError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmamba", description="Mamba networks for medical imaging on nnU-Net.")
    parser.add_argument("--version", action="version", version=f"medmamba {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MedMambaError as err:
        message = f"medmamba {args.command}: error: {err}"
    # Printed once the exception is gone: the frames it held close their progress bars first, so the error stays
    # the last line.
    print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
