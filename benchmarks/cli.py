"""The benchmark harness's command line, ``python -m benchmarks <suite> ...`` from a checkout.

``python -m benchmarks data|quality|aux|cost|estimators|soak --help`` lists each sub-command's options.
The harness is not installed with ``pip install bilevel-mtl``: run it from the repository root
(``pip install -e ".[bench]"`` brings its dependencies).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Sub-commands: name -> (module exposing ``configure(parser)`` and ``run(args) -> int``, help).
SUITES: dict[str, tuple[str, str]] = {
    "data": ("benchmarks.prepare", "generate and cache the data sets of some suites"),
    "quality": ("benchmarks.quality", "train every method on a suite: Δm%%, mean rank, metrics"),
    "aux": ("benchmarks.aux", "auxiliary learning on the Ads suite"),
    "cost": ("benchmarks.cost", "per-step time and memory of each method relative to LS"),
    "estimators": ("benchmarks.estimators", "bias, variance, cost of every hypergradient estimator"),
    "soak": ("benchmarks.soak", "long runs of every stateful balancer: memory, step time, growth"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run a benchmark suite of bilevel-mtl."
    )
    suites = parser.add_subparsers(dest="suite", required=True)
    for name, (module, text) in SUITES.items():
        importlib.import_module(module).configure(suites.add_parser(name, help=text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = importlib.import_module(SUITES[args.suite][0]).run(args)
    return result
