"""Which kernel runs where, decided in one place for the selective scan and the cross-scan.

``auto``: Triton for CUDA tensors when triton imports (and the op supports the input there), the numba kernels
for CPU tensors when numba imports (and the op supports the input there), the torch path otherwise. A backend named
explicitly is checked: Triton needs CUDA (or ``TRITON_INTERPRET=1`` on the CPU) and an importable triton, numba
needs CPU tensors and an importable numba. ``medmamba doctor`` shows the reasons.
"""
from __future__ import annotations

import os
from importlib import import_module

import torch

OPS = {"selective_scan": ("torch", "numba", "triton"), "cross_scan": ("torch", "numba", "triton"),
       "route_fusion": ("torch", "numba"), "causal_conv1d": ("torch", "numba")}
_numba_problem: list[str | None] = []  # filled on first use: None when the numba backend imports


def triton_available() -> bool:
    """Whether triton imports (it ships with PyTorch's CUDA builds on Linux)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def numba_unavailable_reason() -> str | None:
    """None when the numba kernels import, else why it does not (``auto`` then uses torch on the CPU)."""
    if not _numba_problem:
        try:
            import_module("medmamba.kernels.selective_scan_numba")
            import_module("medmamba.kernels.cross_scan_numba")
            import_module("medmamba.kernels.route_fusion_numba")
            import_module("medmamba.kernels.causal_conv1d_numba")
            _numba_problem.append(None)
        except Exception as err:  # ImportError, or numba/llvmlite failing to load on this platform
            _numba_problem.append(f"{type(err).__name__}: {err}")
    return _numba_problem[0]


# Constants to torch.compile: resolved while tracing, no import traced.
@torch.compiler.assume_constant_result
def _triton_usable() -> bool:
    return triton_available()


@torch.compiler.assume_constant_result
def _numba_usable() -> bool:
    return numba_unavailable_reason() is None


def resolve_backend(op: str, requested: str, device: torch.device, supported_by_triton: bool = True,
                    what: str = "", caller: str | None = None, supported_by_numba: bool = True) -> str:
    """The backend that runs ``op`` for tensors on ``device``.

    Args:
        op: a key of ``OPS``.
        requested: "auto" or one of the op's backends (``OPS[op]``).
        device: where the inputs are.
        supported_by_triton: whether the op's Triton kernels take this input (dtype, number of axes).
        supported_by_numba: whether the op's numba kernels take this input (dtype).
        what: the input, for error messages (e.g. "u (shape (2, 8, 64))").
        caller: the function named in error messages (default ``op``).

    Returns:
        "torch", "numba" or "triton".

    Raises:
        ValueError: an unknown backend, or one that cannot run this input here.
    """
    choices, name = ("auto", *OPS[op]), caller or op
    if requested not in choices:
        raise ValueError(f"{name}: backend={requested!r}; expected one of {choices}")
    on = f"{what} is on {device}" if what else f"got {device}"
    if requested == "auto":
        if device.type == "cuda":
            return "triton" if supported_by_triton and _triton_usable() else "torch"
        return "numba" if device.type == "cpu" and supported_by_numba and _numba_usable() else "torch"
    if requested == "triton":
        if not (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
            raise ValueError(f"{name}: backend='triton' needs CUDA tensors ({on}) or TRITON_INTERPRET=1")
        if not _triton_usable():
            raise ValueError(f"{name}: backend='triton' needs triton, which does not import here")
        if not supported_by_triton:
            raise ValueError(f"{name}: backend='triton' does not take this input ({what})")
    if requested == "numba":
        if device.type not in ("cpu", "meta"):
            raise ValueError(f"{name}: backend='numba' needs CPU tensors ({on})")
        if not _numba_usable():
            raise ValueError(f"{name}: backend='numba' is unavailable ({numba_unavailable_reason()})")
        if not supported_by_numba:
            raise ValueError(f"{name}: backend='numba' does not take this input ({what})")
    return requested
