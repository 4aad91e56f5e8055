"""``argparse`` value types of the command lines (``bilevel-mtl`` and ``python -m benchmarks``).

A value out of range is a usage error while the arguments are parsed, before any work
starts: ``prog: error: argument --threads: must be an integer >= 1, got '0'`` (exit code 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(minimum: int) -> Callable[[str], int]:
    """The type of an option that takes an integer >= ``minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return convert


positive_int = integer(1)
nonnegative_int = integer(0)


def finite_float(minimum: float, inclusive: bool) -> Callable[[str], float]:
    """The type of an option that takes a finite number > ``minimum`` (>= when ``inclusive``)."""
    relation = ">=" if inclusive else ">"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {minimum:g}, got {text!r}")
        return value

    return convert


positive_float = finite_float(0.0, inclusive=False)
nonnegative_float = finite_float(0.0, inclusive=True)
