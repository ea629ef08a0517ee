"""Shared by the VM-UNet and MHS-VM recipes: both repositories define ``models/vmunet/vmamba.py`` (VSSM), imported
from the checkout as a package with its own top-level ``models`` (and MHS-VM's ``scanutils``, ``routegen``)."""
from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import torch

_TOP_LEVEL = ("models", "scanutils", "routegen")


def _forget_checkout_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in _TOP_LEVEL:
            del sys.modules[name]


def import_from_checkout(checkout: Path, module: str):
    """``module`` imported from ``checkout`` (put first on sys.path), dropping any same-named modules of another
    checkout imported before. The checkout's folders without ``__init__.py`` are bound as packages first: a
    namespace package loses to a same-named module anywhere on sys.path (benchmarks/models.py)."""
    _forget_checkout_modules()
    parts = module.split(".")
    for depth in range(1, len(parts)):
        package = types.ModuleType(".".join(parts[:depth]))
        package.__path__ = [str(checkout.joinpath(*parts[:depth]))]
        sys.modules[package.__name__] = package
    sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(checkout))


@contextlib.contextmanager
def cuda_means_cpu():
    """MHS-VM's VSSM moves its route tables ``.to('cuda')`` in ``__init__`` (models/vmunet/vmamba.py): on a CPU-only
    machine that call is redirected to the CPU while the official model is built."""
    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if a == "cuda" else a for a in args)
        if kwargs.get("device") == "cuda":
            kwargs["device"] = "cpu"
        return original(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = original
