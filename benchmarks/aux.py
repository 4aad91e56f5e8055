r"""``python -m benchmarks aux``: auxiliary learning on the Ads suite (the MARIGOLD paper's Table 4 analogue).

The main task is ``click``. The lower level trains on

.. math:: f_{click} + \omega_{cc}\, f_{conv|click} + \omega_{c}\, f_{conv} + \omega_{d}\, f_{distill}

with positive weights ω (:class:`~bilevel_mtl.parametrizations.PositiveWeights`, all
starting at 1, the click weight fixed at 1), and MARIGOLD's upper level minimises the
click loss after the step (:class:`~bilevel_mtl.criteria.MainTaskLoss`). Variants:

* ``marigold-aux``: only the distillation weight :math:`\omega_d` is learnt (the paper's
  setting, :math:`f_{click} + f_{conv|click} + f_{conv} + \omega f_{distill}`);
* ``marigold-aux-all``: all three auxiliary weights are learnt;
* ``marigold-aux-exact``: ω_d learnt from the *exact* one-step hypergradient of the same
  criterion (:class:`~bilevel_mtl.balancers.MarigoldFaithful` with
  :class:`~bilevel_mtl.estimators.Unrolled`: autograd through the look-ahead of Adam, O(d)):
  what the criterion itself asks for, free of estimator noise;

each at every ``--upper-lrs`` (Adam on log ω; the paper's default 1e-4 barely moves ω in a
few hundred steps, so larger rates are tried as well). References: ``ls`` (equal weights,
the baseline of the NE gain), ``stl`` (click alone: does auxiliary training help at all?),
``marigold`` (the default worst-case criterion over all four tasks) and
``fixed-distill@ω=…`` (weights 1, 1, 1, ω held fixed, at every ``--fixed-distill-weights``:
what a tuner of :math:`\omega_d` can reach, and what over-weighting costs). A record holds NE
per task, the NE gain over LS of the same seed per task, the final weights and their
trajectory. The summary adds, from the per-seed click NE gain, its bootstrap and t 95%
intervals (``vs_ls``; the gain is already paired with LS) and the rank with noise ties
(``rank``; :mod:`benchmarks.metrics.stats`). Results: ``aux.json``, ``aux.csv``,
``aux_weights.png``, ``ne_gain_ci.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bilevel_mtl._argtypes import nonnegative_float, positive_float
from bilevel_mtl.balancers import STL, Balancer, Marigold, MarigoldFaithful
from bilevel_mtl.balancers.base import Decision, LossBalancer, Need, UpperReport
from bilevel_mtl.criteria import Criterion, MainTaskLoss
from bilevel_mtl.estimators import Exact, Unrolled, UpperObjective
from bilevel_mtl.lower_level import LowerLevel
from bilevel_mtl.parametrizations import PositiveWeights

from .checks import UsageError, add_output_arguments, output_folder, suite_of
from .metrics import ne_gain
from .metrics.stats import compare_methods, format_interval, settings
from .quality import add_common_arguments, resolve, suite_description
from .runs import build_method, mean_std, pick_device, provenance, train_run, write_results
from .suites import Suite

VARIANTS = (
    "ls",
    "stl",
    "marigold",
    "marigold-aux",
    "marigold-aux-all",
    "marigold-aux-exact",
    "fixed-distill",
)


class FixedWeights(LossBalancer):
    r"""The update of :math:`\sum_i \omega_i f_i` with the weights :math:`\omega` held fixed
    (a reference, not a registered method).

    With a ``probe`` criterion :math:`R` it also computes, at every step, the exact one-step
    hypergradient :math:`\partial R(f(\theta), f(A(\omega,\theta)))/\partial\omega`
    (:class:`~bilevel_mtl.estimators.Exact`: autograd through a look-ahead of the optimizer,
    which leaves the training unchanged) and keeps each completed step's in
    :attr:`hypergradients`: what the bi-level criterion asks of the weights along a run
    at these weights."""

    def __init__(self, weights: Sequence[float], probe: Criterion | None = None) -> None:
        super().__init__(len(weights))
        self.fixed = torch.tensor(weights, dtype=torch.float64)
        self.probe = probe
        self.hypergradients: list[list[float]] = []

    @property
    def step_needs(self) -> frozenset[Need]:
        return frozenset({"lookahead"}) if self.probe is not None else frozenset()

    def _weights(self, losses: Tensor) -> Tensor:
        return self.fixed.to(losses)

    def decide(self, lower: LowerLevel) -> Decision:
        decision = super().decide(lower)
        if self.probe is None:
            return decision
        objective = UpperObjective.lookahead(self.probe, lower)
        estimate = Exact().estimate(objective, decision.weights, torch.Generator())
        return replace(decision, pending={"hypergradient": estimate.gradient.detach().tolist()})

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> UpperReport | None:
        if "hypergradient" in decision.pending:
            self.hypergradients.append(decision.pending["hypergradient"])
        return super().commit(decision, losses_after)


def probe_summary(hypergradients: Sequence[Sequence[float]], task: int, weight: float) -> dict[str, Any]:
    """The exact hypergradients of one task's weight ω over a run, in log ω (ω·∂R/∂ω, what an
    upper level on log ω follows): their mean over the run and over each quarter of it, and the
    fraction of the steps asking for a larger weight (a negative derivative)."""
    values = [weight * float(h[task]) for h in hypergradients]
    quarter = max(len(values) // 4, 1)
    return {
        "weight": weight,
        "mean": sum(values) / len(values),
        "quarters": [
            sum(part) / len(part) for i in range(4) if (part := values[i * quarter : (i + 1) * quarter])
        ],
        "fraction_asking_more": sum(v < 0 for v in values) / len(values),
        "steps": len(values),
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Ads auxiliary learning: MARIGOLD tunes auxiliary weights for the click task."
    parser.add_argument("--methods", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--upper-lrs",
        type=positive_float,
        nargs="+",
        default=[1e-4, 1e-2, 1e-1],
        help="upper Adam rates of the aux variants",
    )
    parser.add_argument(
        "--fixed-distill-weights",
        type=nonnegative_float,
        nargs="+",
        default=[0.0, 3.0, 10.0, 100.0],
        help="distillation weights of the fixed-distill references",
    )
    parser.add_argument("--mode", choices=("perturbed", "faithful"), default="perturbed")
    add_common_arguments(parser)
    add_output_arguments(parser, "aux-ads")


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the defaults and ``--out``."""
    if "ls" not in args.methods:
        raise UsageError("--methods", "the NE gain is measured against LS: keep 'ls' in --methods")
    suite = resolve(args, "ads")
    model = suite.model(args.seeds[0])
    for method, make in variants(args, suite).items():
        try:
            make(model, args.seeds[0])
        except (TypeError, ValueError) as error:
            raise UsageError("--methods", f"{method}: {error}") from None
    args.out = output_folder(args, "aux-ads", "aux.json")


def main_task_loss(suite: Suite[Any]) -> MainTaskLoss:
    """The criterion of auxiliary learning: the main task's loss change over the step."""
    assert suite.main_task is not None
    return MainTaskLoss(suite.num_tasks, main=suite.tasks.index(suite.main_task))


def aux_balancer(
    suite: Suite[Any], learnt: tuple[str, ...], lr: float, mode: str, seed: int, exact: bool = False
) -> Balancer:
    """MARIGOLD with the main-task criterion learning the weights of the ``learnt`` tasks, with
    the paper's single-point estimator (the main-task loss has no first-order gradient), or
    (``exact``) the faithful mode with the exact one-step hypergradient (``Unrolled``)."""
    trainable = [task in learnt for task in suite.tasks]
    setting: dict[str, Any] = {
        "lr": lr,
        "criterion": main_task_loss(suite),
        "parametrization": PositiveWeights(suite.num_tasks, init=1.0, trainable=trainable),
        "seed": seed,
    }
    if exact:
        return MarigoldFaithful(suite.num_tasks, estimator=Unrolled(), **setting)
    build = MarigoldFaithful if mode == "faithful" else Marigold.paper
    return build(suite.num_tasks, **setting)


def variants(args: argparse.Namespace, suite: Suite[Any]) -> dict[str, Any]:
    """Method label → ``make_balancer(model, seed)``."""
    auxiliary = tuple(task for task in suite.tasks if task != suite.main_task)
    learnt = {"marigold-aux": ("distill",), "marigold-aux-all": auxiliary, "marigold-aux-exact": ("distill",)}
    main = suite.tasks.index(suite.main_task or suite.tasks[0])
    table: dict[str, Any] = {}
    for method in args.methods:
        if method == "stl":
            table[method] = lambda model, seed: STL(suite.num_tasks, task=main)
        elif method == "fixed-distill":
            for weight in args.fixed_distill_weights:
                weights = [weight if task == "distill" else 1.0 for task in suite.tasks]
                table[f"{method}@ω={weight:g}"] = lambda model, seed, w=weights: FixedWeights(
                    w, probe=main_task_loss(suite)
                )
        elif method in learnt:
            for lr in args.upper_lrs:
                table[f"{method}@lr={lr:g}"] = lambda model, seed, method=method, lr=lr: aux_balancer(
                    suite, learnt[method], lr, args.mode, seed, exact=method == "marigold-aux-exact"
                )
        else:
            table[method] = lambda model, seed, name=method: build_method(name, suite.num_tasks, model, seed)
    return table


def run(args: argparse.Namespace) -> int:
    # matplotlib: the 'plot' extra, imported only here
    from .plots import plot_paired_differences

    torch.set_num_threads(args.threads)
    suite = suite_of("ads", args.size, args.overrides)
    seeds, out = args.seeds, args.out
    device = pick_device(args.device)
    table = variants(args, suite)
    table = {"ls": table.pop("ls"), **table}
    main = suite.main_task
    assert main is not None
    payload: dict[str, Any] = {
        "benchmark": "aux",
        "provenance": provenance(args, seeds, device),
        "suite": suite_description(suite, args.size, {}),
        "main_task": main,
        "methods": list(table),
        "data_seed": args.data_seed,
        "average_last": args.average_last,
        "statistics": settings(f"{main}/ne_gain", "ls", lower_is_better=False),
    }
    metric_of = {spec.task: spec.name for spec in suite.metrics}
    data = suite.datasets(seed=args.data_seed, progress=not args.no_progress)
    records: list[dict[str, Any]] = []
    for seed in seeds:
        baseline: dict[str, Any] = {}
        for method, make in table.items():
            built: list[Balancer] = []

            def make_balancer(
                model: nn.Module, make: Any = make, seed: int = seed, built: list[Balancer] = built
            ) -> Balancer:
                built.append(make(model, seed))
                return built[-1]

            try:
                result = train_run(
                    suite,
                    data,
                    make_balancer,
                    seed,
                    epochs=args.epochs,
                    average_last=args.average_last,
                    weight_every=args.weight_every,
                    device=device,
                    description=f"{method} seed {seed}",
                    progress=not args.no_progress,
                )
            except (ValueError, RuntimeError) as error:
                if method == "ls":
                    raise
                # a method that fails is a result too: recorded, left out of the summary
                failed = {
                    "suite": "ads",
                    "method": method,
                    "seed": seed,
                    "error": f"{type(error).__name__}: {error}",
                }
                records.append(failed)
                print(f"ads {method:26s} seed {seed}: FAILED {failed['error']}", flush=True)
                continue
            record: dict[str, Any] = {"suite": "ads", "method": method, "seed": seed, **result.metrics}
            if method == "ls":
                baseline = record
            for task, name in metric_of.items():
                record[f"{task}/ne_gain"] = ne_gain(result.metrics[name], baseline[name])
            final = result.weights[-1]["weights"] if result.weights else []
            record.update({f"weight/{task}": float(w) for task, w in zip(suite.tasks, final, strict=False)})
            record["train_seconds"] = result.train_seconds
            record["train_cpu_seconds"] = result.train_cpu_seconds
            record["steps"] = result.steps
            record["weights"] = result.weights
            probed = built[-1] if built and isinstance(built[-1], FixedWeights) else None
            if probed is not None and probed.hypergradients:
                distill = suite.tasks.index("distill")
                record["probe/distill"] = probe_summary(
                    probed.hypergradients, distill, float(probed.fixed[distill])
                )
            records.append(record)
            print(
                f"ads {method:26s} seed {seed}: click NE {result.metrics[metric_of['click']]:.4f}  "
                f"gain {record['click/ne_gain']:+.3f}%  weights {[round(w, 3) for w in final]}",
                flush=True,
            )
            payload["records"] = records
            payload["summary"] = summarize(records, main)
            write_results(out, "aux", payload, records)
    payload["summary"] = summarize(records, main)
    write_results(out, "aux", payload, records)
    plot_learnt_weights(records, suite.tasks, main, seeds[0], out / "aux_weights.png")
    plot_paired_differences(
        payload["summary"],
        f"{main}/ne_gain",
        out / "ne_gain_ci.png",
        f"{main} NE gain over LS %",
        f"Ads: {main} NE gain over LS",
        lower_is_better=False,
    )
    print(format_summary(payload["summary"], main))
    print(f"results in {out}")
    return 0


def plot_learnt_weights(
    records: Sequence[dict[str, Any]], tasks: Sequence[str], main: str, seed: int, path: Path
) -> None:
    """The learnt auxiliary weights of the ``marigold-aux*`` runs of ``seed`` against the step
    (log axis: a weight that runs away stays readable); nothing when there are none."""
    from .plots import plot_trajectories

    trajectories = {
        f"{r['method']} ω_{task}": [(w["step"], w["weights"][i]) for w in r["weights"]]
        for r in records
        if r["seed"] == seed and r["method"].startswith("marigold-aux") and "error" not in r
        for i, task in enumerate(tasks)
        if task == "distill" or (task != main and r["method"].startswith("marigold-aux-all"))
    }
    if trajectories:
        plot_trajectories(
            trajectories,
            path,
            "weight ω (log scale)",
            f"Ads: learnt auxiliary weights (seed {seed})",
            log=True,
        )


def summarize(records: list[dict[str, Any]], main: str) -> dict[str, Any]:
    """Per method: mean ± std over seeds of every NE, NE gain and final weight; from the per-seed
    NE gain of the ``main`` task (:func:`~benchmarks.metrics.stats.compare_methods`, higher is
    better) the paired difference to LS with its intervals (``vs_ls``) and the rank with noise
    ties (``rank``). Failed runs are left out (listed under ``failures``)."""
    summary: dict[str, Any] = {}
    scores: dict[str, dict[int, float]] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == method and "error" not in r]
        failures = [
            f"seed {r['seed']}: {r['error']}" for r in records if r["method"] == method and "error" in r
        ]
        entry: dict[str, Any] = {"failures": failures}
        if mine:
            keys = [k for k, v in mine[0].items() if "/" in k and isinstance(v, float)]
            entry.update({key: mean_std([r[key] for r in mine]) for key in keys})
            entry["seeds"] = [r["seed"] for r in mine]
            scores[method] = {r["seed"]: r[f"{main}/ne_gain"] for r in mine}
        summary[method] = entry
    for method, compared in compare_methods(scores, "ls", lower_is_better=False).items():
        summary[method].update(compared)
    return summary


def format_summary(summary: dict[str, Any], main: str) -> str:
    """A plain-text table: method, main-task NE gain over LS mean ± std [bootstrap 95% CI], rank."""
    gain = f"{main} NE gain % [95% CI]"
    width = max(20, *map(len, summary))
    lines = [f"{'method':{width}s} {gain:>42s} {'rank':>5s}"]
    for method, entry in summary.items():
        if "rank" not in entry:
            lines.append(f"{method:{width}s} {'failed on every seed':>42s}")
            continue
        mean, std = entry[f"{main}/ne_gain"]
        interval = format_interval(entry["vs_ls"]["bootstrap_ci"], 3)
        lines.append(f"{method:{width}s} {f'{mean:+.3f} ± {std:.3f} {interval}':>42s} {entry['rank']:5.1f}")
    return "\n".join(lines)
