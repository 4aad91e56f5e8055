r"""``python -m benchmarks quality``: train every method on a suite, report Δm%, mean rank and metrics.

For each seed (the outer loop, so that a run cut short still has every method for the
first seeds) STL is trained first (one model per task), then each method. A record holds
the suite, method, seed, every test metric (averaged over the last ``--average-last``
epochs), Δm% against the STL of the same seed, the mean rank among the methods of that
seed, training wall time and the per-epoch Δm% curve and the weight trajectory. Every
method of a seed starts from the same parameters and sees the same batches
(:func:`~benchmarks.runs.train_run`), so the summary gives, besides mean ± std over seeds
and the mean rank of the seed-averaged metrics (``mean_rank``), the paired difference of
Δm% to LS with its bootstrap and t 95% intervals (``vs_ls``) and the rank with noise ties
(``rank``; :mod:`benchmarks.metrics.stats`). Results are rewritten after every run
(``quality.json``, ``quality.csv``) and the plots (``delta_m_vs_time.png``,
``weights.png``, ``delta_m_ci.png``) at the end.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bilevel_mtl._argtypes import nonnegative_int, positive_int

from .checks import (
    UsageError,
    add_output_arguments,
    check_methods,
    device_name,
    earlier_results,
    output_folder,
    suite_of,
)
from .metrics import delta_m, mean_rank
from .metrics.stats import compare_methods, format_difference, settings
from .runs import (
    build_method,
    mean_std,
    method_names,
    parse_overrides,
    pick_device,
    provenance,
    train_run,
    train_stl,
    write_results,
)
from .suites import SIZES, Suite

QUALITY_SUITES = ("scenes", "scenes2", "manytasks", "scales")
DEFAULT_METHODS = (
    "stl",
    "ls",
    "marigold",
    "marigold-paper",
    "marigold-faithful",
    "bilb4mtl",
    "famo",
    "mgda",
    "pcgrad",
    "cagrad",
    "imtlg",
    "nashmtl",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the training runners (quality and aux)."""
    parser.add_argument(
        "--seeds", type=nonnegative_int, nargs="+", default=None, help="model seeds (default 0 1 2; quick: 0)"
    )
    parser.add_argument("--epochs", type=positive_int, default=None, help="default: the suite size's recipe")
    parser.add_argument("--size", choices=SIZES, default=None, help="preset (default: default; quick: quick)")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="suite settings to replace, e.g. num_train=2000 width=8 batch_size=32",
    )
    parser.add_argument("--data-seed", type=nonnegative_int, default=0, help="seed of the generated data set")
    parser.add_argument(
        "--average-last", type=positive_int, default=3, help="average the metrics of the last N epochs"
    )
    parser.add_argument(
        "--weight-every", type=positive_int, default=10, help="record the task weights every k steps"
    )
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:<index> or auto")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    parser.add_argument(
        "--quick", action="store_true", help="CI-sized: size 'quick', one seed (unless given)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Train methods on a suite; Δm% against STL, mean rank, every metric, wall time."
    parser.add_argument("--suite", dest="suite_name", choices=QUALITY_SUITES, required=True)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help=f"registry names, optionally with options (marigold:lr=0.01); one of {method_names()}",
    )
    add_common_arguments(parser)
    add_output_arguments(parser, "quality-<suite>", resume=True)


def resolve(args: argparse.Namespace, suite_name: str) -> Suite[Any]:
    """Fill in the size and seeds ``--quick`` implies (unless given); the suite they ask for."""
    if args.size is None:
        args.size = "quick" if args.quick else "default"
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    return suite_of(suite_name, args.size, args.overrides)


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the defaults and ``--out``."""
    suite = resolve(args, args.suite_name)
    check_methods([method for method in args.methods if method != "stl"], suite, args.seeds[0])
    earlier = earlier_results(args, "quality.json")
    config = suite_description(suite, args.size, {})["config"]
    if earlier is not None and earlier.get("suite", {}).get("config") != config:
        raise UsageError("--resume", f"{args.out / 'quality.json'} was made with another suite configuration")
    args.out = output_folder(args, f"quality-{args.suite_name}", "quality.json")


def suite_description(suite: Suite[Any], size: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The suite's name, tasks, metrics and full configuration (the sizes the results used)."""
    return {
        "name": suite.name,
        "size": size,
        "overrides": dict(overrides),
        "tasks": list(suite.tasks),
        "metrics": {
            spec.name: {"task": spec.task, "higher_is_better": spec.higher_is_better}
            for spec in suite.metrics
        },
        "config": json.loads(json.dumps(suite.config, default=lambda o: getattr(o, "__dict__", str(o)))),
    }


def summarize(records: Sequence[Mapping[str, Any]], higher_is_better: Mapping[str, bool]) -> dict[str, Any]:
    """Per method: mean ± std over seeds of every metric, Δm% and time; the mean rank of the seed
    means over the metrics (``mean_rank``); and from the per-seed Δm%
    (:func:`~benchmarks.metrics.stats.compare_methods`) the paired difference to LS with its
    intervals (``vs_ls``) and the rank with noise ties (``rank``)."""
    methods = list(dict.fromkeys(record["method"] for record in records))
    summary: dict[str, Any] = {}
    for method in methods:
        mine = [record for record in records if record["method"] == method]
        entry: dict[str, Any] = {"seeds": [record["seed"] for record in mine]}
        for name in [*higher_is_better, "delta_m", "train_seconds", "train_cpu_seconds"]:
            if all(name in record for record in mine):
                entry[name] = mean_std([record[name] for record in mine])
        summary[method] = entry
    means = {method: {name: summary[method][name][0] for name in higher_is_better} for method in methods}
    ranks = mean_rank(means, higher_is_better)
    scores = {m: {r["seed"]: r["delta_m"] for r in records if r["method"] == m} for m in methods}
    for method, compared in compare_methods(scores, "ls").items():
        summary[method].update(mean_rank=ranks[method], **compared)
    return summary


def attach_ranks(records: list[dict[str, Any]], higher_is_better: Mapping[str, bool]) -> None:
    """Each record's mean rank among the methods trained with the same seed."""
    for seed in {record["seed"] for record in records}:
        mine = {record["method"]: record for record in records if record["seed"] == seed}
        ranks = mean_rank({method: record for method, record in mine.items()}, higher_is_better)
        for method, record in mine.items():
            record["mean_rank"] = ranks[method]


def run(args: argparse.Namespace) -> int:
    # matplotlib: the 'plot' extra, imported only here
    from .plots import plot_delta_m_vs_time, plot_paired_differences, plot_weights

    torch.set_num_threads(args.threads)
    suite = suite_of(args.suite_name, args.size, args.overrides)
    seeds, out = args.seeds, args.out
    device = pick_device(args.device)
    methods = list(dict.fromkeys(["stl", *args.methods]))
    higher = suite.higher_is_better
    payload: dict[str, Any] = {
        "benchmark": "quality",
        "provenance": provenance(args, seeds, device),
        "suite": suite_description(suite, args.size, parse_overrides(args.overrides)),
        "methods": methods,
        "average_last": args.average_last,
        "data_seed": args.data_seed,
        "statistics": settings("delta_m", "ls"),
    }
    records: list[dict[str, Any]] = []
    earlier = earlier_results(args, "quality.json")
    if earlier is not None:
        records = [r for r in earlier["records"] if r["method"] in methods and r["seed"] in seeds]
        payload["earlier_runs"] = [*earlier.get("earlier_runs", []), earlier["provenance"]]
    data = suite.datasets(seed=args.data_seed, progress=not args.no_progress)
    options = {
        "epochs": args.epochs,
        "average_last": args.average_last,
        "weight_every": args.weight_every,
        "device": device,
        "progress": not args.no_progress,
    }
    for seed in seeds:
        stl = next((r for r in records if r["method"] == "stl" and r["seed"] == seed), None)
        for method in methods:
            if any(r["method"] == method and r["seed"] == seed for r in records):
                continue
            if method == "stl":
                result = train_stl(suite, data, seed, **options)
            else:
                result = train_run(
                    suite,
                    data,
                    functools.partial(build_method, method, suite.num_tasks, seed=seed),
                    seed,
                    description=f"{method} seed {seed}",
                    **options,
                )
            record: dict[str, Any] = {
                "suite": suite.name,
                "method": method,
                "seed": seed,
                **result.metrics,
                "train_seconds": result.train_seconds,
                "train_cpu_seconds": result.train_cpu_seconds,
                "steps": result.steps,
                "epochs": len(result.epochs),
            }
            if method == "stl":
                stl = record
            assert stl is not None
            baseline = {name: stl[name] for name in higher}
            # Δm% is undefined on a metric whose STL value is 0 (possible in tiny runs): left out, and said so
            used = {name: up for name, up in higher.items() if baseline[name] != 0}
            record["delta_m_left_out"] = " ".join(sorted(set(higher) - set(used)))
            record["delta_m"] = delta_m(result.metrics, baseline, used)
            record["curve"] = [
                {
                    "epoch": e["epoch"],
                    "train_seconds": e["train_seconds"],
                    "train_cpu_seconds": e["train_cpu_seconds"],
                    "delta_m": delta_m(e["metrics"], baseline, used),
                    "metrics": e["metrics"],
                }
                for e in result.epochs
            ]
            record["weights"] = result.weights
            records.append(record)
            print(
                f"{suite.name} {method:18s} seed {seed}: Δm% {record['delta_m']:+7.2f}  "
                f"train {result.train_seconds:7.1f} s (CPU {result.train_cpu_seconds:7.1f} s)",
                flush=True,
            )
            attach_ranks(records, higher)
            payload["records"] = records
            payload["summary"] = summarize(records, higher)
            write_results(out, "quality", payload, records)
    attach_ranks(records, higher)
    payload["records"] = records
    payload["summary"] = summarize(records, higher)
    write_results(out, "quality", payload, records)
    plot_delta_m_vs_time(
        records, out / "delta_m_vs_time.png", title=f"{suite.name}: Δm% against training time"
    )
    plot_weights(
        records, suite.tasks, out / "weights.png", title=f"{suite.name}: task weights (seed {seeds[0]})"
    )
    plot_paired_differences(
        payload["summary"], "delta_m", out / "delta_m_ci.png", "Δm% against STL", f"{suite.name}: Δm%"
    )
    print(format_summary(payload["summary"]))
    print(f"results in {out}")
    return 0


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table: method, Δm% mean ± std, Δm% minus LS [bootstrap 95% CI], rank with noise
    ties, mean rank over the metrics, training seconds."""
    lines = [
        f"{'method':20s} {'Δm%':>16s} {'Δm% - LS [95% CI]':>26s} {'rank':>5s} {'MR':>6s} {'train s':>9s}"
    ]
    for method, entry in summary.items():
        mean, std = entry["delta_m"]
        versus = format_difference(entry["vs_ls"]) if "vs_ls" in entry else "–"
        lines.append(
            f"{method:20s} {mean:+8.2f} ± {std:5.2f} {versus:>26s} {entry['rank']:5.1f} "
            f"{entry['mean_rank']:6.2f} {entry['train_seconds'][0]:9.1f}"
        )
    return "\n".join(lines)
