"""argparse types for numeric options: a value out of range is argparse's one-line usage error (exit 2)."""
from __future__ import annotations

import argparse
import math


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_range(low: int, high: int | None = None):
    """An argparse type: an integer in ``[low, high]`` (no upper bound when ``high`` is None).

    Args:
        low: smallest value allowed.
        high: largest value allowed, or None.

    Returns:
        The type function for ``add_argument(type=...)``.
    """
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}" if high is not None
                                             else f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = int_range(1)
non_negative_int = int_range(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in ``[0, 1)``."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value
