"""``python -m benchmarks data``: generate (or find in the cache) the data sets of some suites and time it."""

from __future__ import annotations

import argparse
import time

import torch

from bilevel_mtl._argtypes import nonnegative_int, positive_int

from .cache import cache_root
from .checks import writable_folder
from .suites import SIZES, SUITES, make_suite


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate and cache benchmark data sets, reporting the time each took."
    parser.add_argument("--suites", nargs="+", choices=sorted(SUITES), default=sorted(SUITES))
    parser.add_argument("--size", choices=SIZES, default=None, help="preset (default: default; quick: quick)")
    parser.add_argument(
        "--quick", action="store_true", help="CI-sized: size 'quick' (unless --size is given)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="data seed")
    parser.add_argument(
        "--cache-dir", default=None, help="default: $BILEVEL_MTL_CACHE or ~/.cache/bilevel_mtl"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="generate without reading or writing the cache"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads (the Ads teacher trains with torch)"
    )


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the size."""
    if args.size is None:
        args.size = "quick" if args.quick else "default"
    if not args.no_cache:
        writable_folder(cache_root(args.cache_dir), "--cache-dir")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    where = "not cached" if args.no_cache else f"cache: {cache_root(args.cache_dir)}"
    print(f"data seed {args.seed}, size {args.size}, {where}")
    for name in args.suites:
        suite = make_suite(name, args.size)
        wall, cpu = time.perf_counter(), time.process_time()
        splits = suite.datasets(seed=args.seed, cache_dir=args.cache_dir, use_cache=not args.no_cache)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sizes = f"train {len(splits.train):>8d}   test {len(splits.test):>8d}"  # type: ignore[arg-type]
        print(f"{name:10s} wall {wall:7.1f} s   cpu {cpu:7.1f} s   {sizes}", flush=True)
    return 0
