"""The ``bilevel-mtl`` command line: ``demo`` and ``list``.

The benchmark suites are not part of the installed package: run them from a checkout of the
repository with ``python -m benchmarks <suite> ...``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bilevel-mtl",
        description="Multi-task loss balancing by bi-level optimization.",
        epilog="The benchmark suites run from a checkout of the repository: python -m benchmarks --help",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small multi-task model with LS and MARIGOLD")
    from .demo import configure as configure_demo

    configure_demo(demo)
    from .registry import configure as configure_list

    configure_list(commands.add_parser("list", help="list every balancer and estimator with its cost"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run as run_demo

        return run_demo(args)
    from .registry import run as run_list

    return run_list(args)


if __name__ == "__main__":
    raise SystemExit(main())
