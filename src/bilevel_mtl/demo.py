"""``bilevel-mtl demo``: LS and MARIGOLD side by side on a built-in problem."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=400, help="training steps per method")


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("demo is being written")
