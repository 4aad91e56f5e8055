"""``python -m benchmarks estimators``: bias, variance, cosine, time and memory of each estimator.

For each problem (quadratic bilevel, MLP, SegNet-lite) and number of tasks ``m``,
at one fixed training step (warm optimizer, fixed batch, MARIGOLD's criterion with
a non-uniform adversary, non-uniform weights λ), every estimator is compared with
the exact one-step hypergradient :math:`g = \\nabla\\Phi(\\lambda)` (:class:`Exact`).
All vectors are compared on the simplex tangent space (:math:`Pv = v - \\bar v\\mathbf 1`):
that is the part a simplex parametrization turns into an update (see
``docs/estimators.md``). Records (JSON + CSV) and plots go to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bilevel_mtl._argtypes import integer, nonnegative_int, positive_int
from bilevel_mtl.balancers import LS
from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import WorstCaseDecrement
from bilevel_mtl.estimators import (
    Estimator,
    Exact,
    ForwardDifference,
    Implicit,
    SinglePoint,
    TwoPoint,
    Unrolled,
    UpperObjective,
    ZerothOrder,
    project_tangent,
)
from bilevel_mtl.training import BalancedOptimizer

from .checks import add_output_arguments, output_folder, read_json
from .estimator_problems import PROBLEMS, Problem
from .profiling import describe_device, interleaved_ratio, peak_extra_bytes

RADIUS = 1e-3
ESTIMATORS: dict[str, tuple[Callable[[], Estimator], str]] = {
    "single-point": (lambda: SinglePoint(RADIUS), "one-step"),
    "single-point-tangent": (lambda: SinglePoint(RADIUS, directions="tangent"), "one-step"),
    "forward-difference": (lambda: ForwardDifference(RADIUS), "one-step"),
    "forward-difference-tangent": (lambda: ForwardDifference(RADIUS, directions="tangent"), "one-step"),
    "two-point": (lambda: TwoPoint(RADIUS), "one-step"),
    "two-point-tangent": (lambda: TwoPoint(RADIUS, directions="tangent"), "one-step"),
    "two-point-tangent-logits": (lambda: TwoPoint(RADIUS, directions="tangent", space="logits"), "one-step"),
    "unrolled-1": (lambda: Unrolled(1), "one-step"),
    "unrolled-2": (lambda: Unrolled(2), "two-step"),
    "implicit-cg": (lambda: Implicit("cg", ridge=1e-3, max_iter=10), "fixed-point"),
    "exact": (lambda: Exact(), "one-step"),
}
FULL_TASKS = (2, 3, 4, 8, 16, 32, 64)
QUICK_TASKS = (2, 3)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny CI-sized run (m = 2, 3; few samples)")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--estimators", nargs="+", choices=list(ESTIMATORS), default=list(ESTIMATORS))
    parser.add_argument(
        "--tasks", nargs="+", type=integer(2), help="numbers of tasks m (default 2..64; quick: 2 3)"
    )
    parser.add_argument(
        "--samples", type=integer(2), help="estimates per random estimator (default 64; quick: 3)"
    )
    parser.add_argument(
        "--repeats", type=positive_int, help="interleaved timing pairs (default 15; quick: 2)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: write summary.md and the plots of this results.json to --out",
    )
    add_output_arguments(parser, "estimators")


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the defaults and ``--out``."""
    if args.from_json is not None:
        read_json(args.from_json, "--from-json", ("records", "meta"))
    args.tasks = args.tasks or list(QUICK_TASKS if args.quick else FULL_TASKS)
    args.samples = args.samples or (3 if args.quick else 64)
    args.repeats = args.repeats or (2 if args.quick else 15)
    args.out = output_folder(args, "estimators", "results.json")


def step_context(problem: Problem) -> StepContext:
    """The context :meth:`BalancedOptimizer.step` gives a balancer: zero_grad, forward, keep the graph."""
    return StepContext.evaluate(problem.model, problem.optimizer, problem.closure)


def _tangent(vector: Tensor) -> Tensor:
    return project_tangent(vector.detach().double().cpu())


def accuracy(estimates: list[Tensor], exact: Tensor) -> dict[str, float]:
    """Relative bias and spread of the estimates and their mean cosine with ``exact`` (tangent parts)."""
    target = _tangent(exact)
    scale = float(target.norm())
    stack = torch.stack([_tangent(e) for e in estimates])
    mean = stack.mean(dim=0)
    n = stack.shape[0]
    spread = float(((stack - mean) ** 2).sum(dim=1).mean()) * n / (n - 1) if n > 1 else 0.0
    cosines = torch.nn.functional.cosine_similarity(stack, target[None], dim=1)
    return {
        "rel_bias": float((mean - target).norm()) / scale,
        "rel_std": math.sqrt(spread) / scale,
        "rel_bias_se": math.sqrt(spread / n) / scale,
        "cosine_to_exact": float(cosines.mean()),
        "exact_norm": scale,
    }


def measure(
    problem_name: str,
    m: int,
    names: list[str],
    samples: int,
    repeats: int,
    seed: int,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """All records of one (problem, m)."""
    device = torch.device("cpu")
    problem = PROBLEMS[problem_name](m, seed)
    twin = PROBLEMS[problem_name](m, seed)  # same model and state: the LS baseline steps on this copy
    baseline = BalancedOptimizer(twin.model, twin.optimizer, LS(m))
    gen = torch.Generator().manual_seed(seed)
    criterion = WorstCaseDecrement(m)
    with torch.no_grad():
        assert criterion.rho is not None
        criterion.rho.logits.copy_(torch.randn(m, generator=gen))
    lam = torch.softmax(0.5 * torch.randn(m, generator=gen), dim=0)

    context = step_context(problem)
    exact = Exact().estimate(UpperObjective.lookahead(criterion, context), lam, gen).gradient

    def ls_step() -> None:
        baseline.step(twin.closure)

    records: list[dict[str, Any]] = []
    prepares: list[Callable[[], Callable[[], object]]] = [lambda: ls_step]
    for name in names:
        progress(f"{problem_name} m={m} {name}")
        factory, target = ESTIMATORS[name]
        estimator = factory()
        draws = torch.Generator().manual_seed(seed + 1)
        repeat = samples if isinstance(estimator, ZerothOrder) else 1
        estimates = [
            estimator.estimate(UpperObjective.lookahead(criterion, context), lam, draws).gradient
            for _ in range(repeat)
        ]

        def prepare(estimator: Estimator = estimator, draws: torch.Generator = draws) -> Callable[[], object]:
            objective = UpperObjective.lookahead(criterion, step_context(problem))
            return lambda: estimator.estimate(objective, lam, draws).gradient

        ratio = interleaved_ratio(ls_step, prepare, device, repeats=repeats)
        prepares.append(prepare)
        evaluations = (
            estimator.num_directions * estimator.evaluations_per_direction + estimator.shared_evaluations
            if isinstance(estimator, ZerothOrder)
            else None
        )
        records.append(
            {
                "estimator": name,
                "problem": problem_name,
                "m": m,
                "d": problem.num_params,
                **accuracy(estimates, exact),
                "samples": len(estimates),
                "target": target,
                "evaluations": evaluations,
                "time_ratio_ls": ratio.median,
                "time_ratio_q25": ratio.q25,
                "time_ratio_q75": ratio.q75,
                "estimate_seconds": ratio.method_seconds,
                "ls_step_seconds": ratio.baseline_seconds,
                "device": describe_device(device),
                "dtype": "float32",
                "config": repr(estimator),
            }
        )
    progress(f"{problem_name} m={m} memory")
    ls_peak, *peaks = peak_extra_bytes(prepares, device)
    for record, peak in zip(records, peaks, strict=True):
        record["peak_mem_bytes"] = peak
        record["ls_peak_mem_bytes"] = ls_peak
    return records


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def write_results(out: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def summary_table(records: list[dict[str, Any]], problem: str, m: int) -> str:
    """A Markdown table estimator × (bias, std, cosine, time, memory) for one problem and m."""
    rows = [r for r in records if r["problem"] == problem and r["m"] == m]
    if not rows:
        return ""
    lines = [
        f"**{problem}, m = {m}** (d = {rows[0]['d']}; one LS step {rows[0]['ls_step_seconds'] * 1e3:.1f} ms, "
        f"peak {_bytes(rows[0]['ls_peak_mem_bytes'])})",
        "",
        "| estimator | target | rel. bias (± s.e.) | rel. std | mean cosine | time / LS step "
        "| peak extra memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bias = f"{r['rel_bias']:.3g}" + (f" ± {r['rel_bias_se']:.2g}" if r["samples"] > 1 else "")
        lines.append(
            f"| {r['estimator']} | {r['target']} | {bias} | {r['rel_std']:.3g} | {r['cosine_to_exact']:.3f} "
            f"| {r['time_ratio_ls']:.2f} [{r['time_ratio_q25']:.2f}, {r['time_ratio_q75']:.2f}] "
            f"| {_bytes(r['peak_mem_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def write_summary(out: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``summary.md``: the tables at every m of every problem, with the run's provenance."""
    parts = [
        "# Estimator benchmark results\n",
        f"Command: `{meta['command']}`; commit `{meta['commit']}`; device: {meta['device']}; "
        f"torch {meta['torch']}; seeds {meta['seeds']}; {meta['samples']} estimates per random "
        f"estimator; time = median of {meta['repeats']} interleaved pairs [quartiles].\n",
        f"Metrics: {meta['metrics']}. Memory: {meta['peak_mem']}.\n",
    ]
    for problem in dict.fromkeys(r["problem"] for r in records):
        for m in sorted({r["m"] for r in records if r["problem"] == problem}):
            parts.append(summary_table(records, problem, m))
    (out / "summary.md").write_text("\n".join(parts))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.from_json is not None:
        data = read_json(args.from_json, "--from-json", ("records", "meta"))
        write_summary(args.out, data["records"], data["meta"])
        if not args.no_plots:
            from .estimator_plots import plot_all

            plot_all(data["records"], args.out)
        return 0
    torch.set_num_threads(args.threads)
    tasks, samples, repeats = args.tasks, args.samples, args.repeats
    meta = {
        "command": " ".join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "commit": _git_commit(),
        "device": describe_device(torch.device("cpu")),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seeds": [args.seed],
        "tasks": list(tasks),
        "samples": samples,
        "repeats": repeats,
        "radius": RADIUS,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "metrics": "tangent-space (P v = v - mean(v)) parts against Exact (one-step look-ahead)",
        "peak_mem": "extra PyTorch CPU-allocator bytes during one estimate (torch.profiler events), "
        "above the memory live before it",
    }
    records: list[dict[str, Any]] = []
    jobs = [(p, m) for p in args.problems for m in tasks]
    with tqdm(total=len(jobs) * len(args.estimators), desc="estimators", unit="est") as bar:
        for problem_name, m in jobs:
            found = measure(
                problem_name, m, args.estimators, samples, repeats, args.seed, bar.set_postfix_str
            )
            records.extend(found)
            bar.update(len(found))
            write_results(args.out, records, meta)
    write_summary(args.out, records, meta)
    if not args.no_plots:
        from .estimator_plots import plot_all

        plot_all(records, args.out)
    print(f"wrote {len(records)} records to {args.out}")
    return 0
