"""The benchmark harness's command line, ``python -m benchmarks <suite> ...`` from a checkout.

``python -m benchmarks data|quality|aux|cost|estimators|soak --help`` lists each sub-command's
options. Every value is checked before any work starts (:mod:`benchmarks.checks`): a bad one is a
one-line usage error (exit code 2). The harness is not installed with ``pip install bilevel-mtl``:
run it from the repository root (``pip install -e ".[bench]"`` brings its dependencies).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from .checks import UsageError

# Sub-commands: name -> (module with ``configure(parser)``, ``check(args)``, ``run(args) -> int``; help).
SUITES: dict[str, tuple[str, str]] = {
    "data": ("benchmarks.prepare", "generate and cache the data sets of some suites"),
    "quality": ("benchmarks.quality", "train every method on a suite: Δm%%, mean rank, metrics"),
    "aux": ("benchmarks.aux", "auxiliary learning on the Ads suite"),
    "cost": ("benchmarks.cost", "per-step time and memory of each method relative to LS"),
    "estimators": ("benchmarks.estimators", "bias, variance, cost of every hypergradient estimator"),
    "soak": ("benchmarks.soak", "long runs of every stateful balancer: memory, step time, growth"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line's parser and each sub-command's."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run a benchmark suite of bilevel-mtl."
    )
    suites = parser.add_subparsers(dest="suite", required=True)
    commands = {name: suites.add_parser(name, help=text) for name, (_, text) in SUITES.items()}
    for name, command in commands.items():
        importlib.import_module(SUITES[name][0]).configure(command)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(SUITES[args.suite][0])
    try:
        module.check(args)
    except UsageError as error:
        commands[args.suite].error(str(error))
    result: int = module.run(args)
    return result
