"""The ``bilevel-mtl`` command line: ``demo``, ``bench <suite>`` and ``list``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Benchmark suites: name -> module exposing ``configure(parser)`` and ``run(args) -> int``.
# They are imported only for ``bilevel-mtl bench`` (``demo`` and ``list`` need the library alone).
BENCHMARKS: dict[str, str] = {
    "data": "bilevel_mtl.bench.prepare",
    "quality": "bilevel_mtl.bench.quality",
    "aux": "bilevel_mtl.bench.aux",
    "cost": "bilevel_mtl.bench.cost",
    "estimators": "bilevel_mtl.bench.estimators",
}


def build_parser(benchmarks: bool = True) -> argparse.ArgumentParser:
    """The command line's parser; ``benchmarks=False`` leaves the suites' options out (no import)."""
    parser = argparse.ArgumentParser(
        prog="bilevel-mtl", description="Multi-task loss balancing by bi-level optimization."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small multi-task model with LS and MARIGOLD")
    from .demo import configure as configure_demo

    configure_demo(demo)
    from .registry import configure as configure_list

    configure_list(commands.add_parser("list", help="list every balancer and estimator with its cost"))
    bench = commands.add_parser("bench", help="run a benchmark suite")
    suites = bench.add_subparsers(dest="suite", required=True)
    for name, module in BENCHMARKS.items():
        suite = suites.add_parser(name, help=f"the {name} suite ({module})")
        if benchmarks:
            importlib.import_module(module).configure(suite)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(benchmarks=argv[:1] == ["bench"]).parse_args(argv)
    if args.command == "demo":
        from .demo import run as run_demo

        return run_demo(args)
    if args.command == "list":
        from .registry import run as run_list

        return run_list(args)
    module = importlib.import_module(BENCHMARKS[args.suite])
    result: int = module.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
