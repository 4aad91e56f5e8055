r"""``python -m benchmarks cost``: per-step time and peak memory of each method against a plain
PyTorch step and against LS.

References: the *plain* step is what a user would otherwise run::

    optimizer.zero_grad(); losses = closure(); losses.mean().backward(); optimizer.step()

and *LS* is the library's equal weights through :class:`~bilevel_mtl.BalancedOptimizer` (the
same gradient, plus the library's step). Every method's ratios are given against both.

Models (``--models``): ``mlp``, the ManyTasks MLP (depth 2) at every hidden width d of
``--hidden`` and every number of tasks m of ``--tasks``, on one fixed batch of
``--batch-size`` (``--set`` changes its other settings); ``scenes``, the Scenes suite's
SegNet-lite (m = 3) at the suite's own batch size (preset ``default``; ``quick`` with
``--quick``).

Protocol (``BENCHMARKS.md``, cost): the plain loop, LS and the method each get their own
copy of the same model, Adam and the same fixed batch; after ``--warmup`` steps of each,
the steps are timed **interleaved in one process**, in rounds of one block each (plain, LS,
method, plain, LS, method, ...), so that machine noise hits all alike. A block is ``k``
consecutive steps, ``k`` chosen per runner in the warm-up so that a block takes at least
``--block-ms``. A ratio is the method's time per step over a reference's in the same round;
the record gives, against each reference, the median ratio over the rounds and its
interquartile range, and the median time per step of each runner. A method slower than
``--slow`` seconds a step is measured with fewer steps (``slow`` in the record), one slower
than ``--give-up`` with a single round (``pairs`` = 1). ``--resume`` keeps the finished
records of a run made with the same batch size, ``--set``, seed, device, threads and
``--quick``.

Clock: on CUDA, wall time with ``torch.cuda.synchronize()`` before reading it at each end
of a block. On CPU, the process's CPU time (``time.process_time``, all threads) is the
primary measure: on a shared machine a wall-clock sample of a millisecond-long step is
mostly the time the process waited for a core, which says nothing about the method. The
wall-clock ratios are recorded as well (``wall_ratio_*``, ``wall_plain_ratio_*``).

Memory, the peak *during a step* of the tensor memory allocated above what is live before
it (parameters, optimizer state, the batch), as ratios to LS's and to the plain step's
(:func:`~benchmarks.profiling.peak_extra_bytes`):

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before the step;
* CPU: the PyTorch CPU allocator's allocations and frees during the step, as recorded by
  ``torch.profiler`` (``profile_memory=True``); the peak of their running sum. It counts
  tensor bytes, not pages, so it depends neither on the machine's load nor on what the
  heap kept from earlier steps.

A ratio whose reference peak is 0 is recorded as ``None`` (``null`` in JSON, "n/a" in the
output), never as NaN.

Results: ``cost.json``, ``cost.csv``, ``cost.png`` (the first width; ``cost_d<d>.png`` the others).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from bilevel_mtl._argtypes import nonnegative_int, positive_float, positive_int
from bilevel_mtl.training import BalancedOptimizer

from .checks import (
    add_output_arguments,
    check_methods,
    check_same_settings,
    device_name,
    earlier_results,
    output_folder,
    suite_of,
)
from .datasets import iterate_batches, to_device
from .profiling import peak_extra_bytes, peak_measure
from .quality import DEFAULT_METHODS as QUALITY_METHODS
from .runs import build_method, method_names, pick_device, provenance, write_results
from .suites import Suite, make_suite

DEFAULT_METHODS = tuple(m for m in QUALITY_METHODS if m != "stl")
"""The quality suite's methods but STL; ``ls`` gives LS against the plain step (and is the
reference of every other ratio besides)."""
MODELS = ("mlp", "scenes")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Per-step time and peak memory against a plain PyTorch step and LS."
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), help=f"one of {method_names()}"
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="ManyTasks MLP, Scenes SegNet-lite"
    )
    parser.add_argument(
        "--tasks",
        type=positive_int,
        nargs="+",
        default=None,
        help="numbers of tasks m of the MLP (default 2 3 8 32 128 256; quick: 2 8)",
    )
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[256], help="MLP widths d to sweep")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="the MLP's batch")
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps of each runner first")
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed rounds (plain, LS, method), at most (default 20; quick: 3)",
    )
    parser.add_argument(
        "--block-ms", type=positive_float, default=20.0, help="time of one timed block, at least"
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=20.0,
        help="seconds of timed steps per (model, m, d, method), at most",
    )
    parser.add_argument(
        "--slow", type=positive_float, default=1.0, help="seconds a step beyond which fewer are timed"
    )
    parser.add_argument(
        "--give-up", type=positive_float, default=30.0, help="seconds a step beyond which one round is timed"
    )
    parser.add_argument(
        "--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE", help="ManyTasks settings"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:<index> or auto")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized: m in {2, 8}, 3 rounds (unless given), Scenes at its quick preset",
    )
    parser.add_argument("--no-progress", action="store_true")
    add_output_arguments(parser, "cost", resume=True)


def mlp_suite(num_tasks: int, hidden: int, args: argparse.Namespace) -> Suite[Any]:
    """The m-task MLP suite of one measurement: one batch of training data, one regression head
    per task (``--set`` over it)."""
    fixed = {
        "num_tasks": num_tasks,
        "hidden": hidden,
        "num_train": args.batch_size,
        "num_test": 8,
        "classification_fraction": 0.0,
    }
    return suite_of("manytasks", "default", args.overrides, **fixed)


def scenes_suite(args: argparse.Namespace) -> Suite[Any]:
    """The Scenes suite at its preset (``quick`` with ``--quick``), one batch of its batch size."""
    size = "quick" if args.quick else "default"
    batch = make_suite("scenes", size).training.batch_size
    return make_suite("scenes", size, num_train=batch, num_test=1)


def cost_figure(hidden: int, widths: Sequence[int]) -> str:
    """The figure of the MLP at width ``hidden``: ``cost.png`` for the first of ``widths``."""
    return "cost.png" if hidden == min(widths) else f"cost_d{hidden}.png"


# What the records of a run depend on: a resumed run must use the same.
_SETTINGS = {
    "batch_size": "--batch-size",
    "overrides": "--set",
    "seed": "--seed",
    "device": "--device",
    "threads": "--threads",
    "quick": "--quick",
}


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the defaults and ``--out``."""
    if args.tasks is None:
        args.tasks = [2, 8] if args.quick else [2, 3, 8, 32, 128, 256]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    suites = [mlp_suite(m, d, args) for m in args.tasks for d in args.hidden] if "mlp" in args.models else []
    suites += [scenes_suite(args)] if "scenes" in args.models else []
    for suite in suites:
        check_methods(["ls", *args.methods], suite, args.seed)
    earlier = earlier_results(args, "cost.json")
    if earlier is not None:
        check_same_settings(earlier, args, _SETTINGS, args.out / "cost.json")
    args.out = output_folder(args, "cost", "cost.json")


def _quantile(values: Sequence[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


Clock = Callable[[], tuple[float, float]]
"""The time now as (measured, wall) seconds."""


def device_clock(device: torch.device) -> Clock:
    """On CUDA, wall time after ``torch.cuda.synchronize`` (both values); on CPU, process CPU
    time (all threads) and wall time."""

    def now() -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            wall = time.perf_counter()
            return wall, wall
        return time.process_time(), time.perf_counter()

    return now


def time_block(step: Callable[[], object], steps: int, clock: Clock) -> tuple[float, float]:
    """(measured, wall) seconds per step over ``steps`` calls of ``step``."""
    measured, wall = clock()
    for _ in range(steps):
        step()
    measured_end, wall_end = clock()
    return (measured_end - measured) / steps, (wall_end - wall) / steps


@dataclass
class Timings:
    """Seconds per step of each runner's block in every round: ``measured[name][round]``."""

    measured: dict[str, list[float]]
    wall: dict[str, list[float]]

    def ratios(self, name: str, reference: str, wall: bool = False) -> dict[str, float]:
        r"""Median and quartiles over the rounds r of :math:`t_{name}(r) / t_{reference}(r)`."""
        times = self.wall if wall else self.measured
        ratios = [a / b for a, b in zip(times[name], times[reference], strict=True)]
        return {
            "median": statistics.median(ratios),
            "q25": _quantile(ratios, 0.25),
            "q75": _quantile(ratios, 0.75),
        }


def interleave(
    runners: Mapping[str, Callable[[], object]],
    steps: Mapping[str, int],
    clock: Clock,
    rounds: int,
    budget: float = math.inf,
) -> Timings:
    """Rounds of one block of each runner, in the order of ``runners`` (plain, LS, method, plain,
    LS, method, ...), ``steps[name]`` steps a block: ``rounds`` of them, or fewer once ``budget``
    wall seconds of timed steps are spent, but never fewer than ``min(3, rounds)``."""
    timings = Timings({name: [] for name in runners}, {name: [] for name in runners})
    spent, done = 0.0, 0
    while done < rounds and (done < min(3, rounds) or spent < budget):
        for name, step in runners.items():
            measured, wall = time_block(step, steps[name], clock)
            timings.measured[name].append(measured)
            timings.wall[name].append(wall)
            spent += wall * steps[name]
        done += 1
    return timings


def plain_step(optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> None:
    """The step a user would otherwise write: the mean of the task losses, backward, Adam."""
    optimizer.zero_grad()
    losses = closure()
    torch.autograd.backward(losses.mean())
    optimizer.step()


def build_steps(
    suite: Suite[Any], method: str, batch_size: int, device: torch.device, seed: int
) -> dict[str, Any]:
    """``{"plain": step, "ls": step, method: step}`` (``method`` once when it is ``ls``): each on
    its own copy of ``suite.model(seed)`` with Adam and the same fixed batch."""
    data = suite.datasets(seed=seed, progress=False)
    inputs, targets = to_device(next(iter(iterate_batches(data.train, batch_size))), device)
    steps: dict[str, Any] = {}
    for name in dict.fromkeys(("plain", "ls", method)):
        model = suite.model(seed).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def closure(model: Any = model) -> torch.Tensor:
            return suite.task_losses(model(inputs), targets)

        if name == "plain":
            steps[name] = functools.partial(plain_step, optimizer, closure)
        else:
            balancer = build_method(name, suite.num_tasks, model, seed).to(device)
            steps[name] = functools.partial(BalancedOptimizer(model, optimizer, balancer).step, closure)
    return steps


def measure(
    kind: str,
    suite: Suite[Any],
    hidden: int,
    batch_size: int,
    method: str,
    args: argparse.Namespace,
    device: torch.device,
    clock: Clock,
) -> dict[str, Any]:
    """Interleaved timing and memory of the plain step, LS and ``method`` on one batch of
    ``suite`` (``kind``: ``mlp`` or ``scenes``; ``hidden``: its width, for the record)."""
    steppers = build_steps(suite, method, batch_size, device, args.seed)
    # warm-up; a method slower than --slow seconds a step gets one warm-up step, the minimum
    # of 3 rounds, one-step blocks and one memory probe, so that m = 256 finishes
    warm = {name: [time_block(step, 1, clock)[0]] for name, step in steppers.items()}
    slow = warm[method][0] > args.slow
    for _ in range(0 if slow else args.warmup - 1):
        for name, step in steppers.items():
            warm[name].append(time_block(step, 1, clock)[0])
    steps = {name: max(1, math.ceil(args.block_ms / 1000 / max(min(warm[name]), 1e-6))) for name in steppers}
    rounds = 1 if warm[method][0] > args.give_up else 3 if slow else args.repeats
    timings = interleave(steppers, steps, clock, rounds, args.budget)
    peaks = peak_extra_bytes([functools.partial(_itself, step) for step in steppers.values()], device)
    memory = dict(zip(steppers, peaks, strict=True))
    record: dict[str, Any] = {
        "model": kind,
        "method": method,
        "num_tasks": suite.num_tasks,
        "hidden": hidden,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in suite.model(args.seed).parameters()),
        "pairs": len(timings.measured["plain"]),
        "steps_per_block": steps[method],
        "ls_steps_per_block": steps["ls"],
        "plain_steps_per_block": steps["plain"],
        "slow": slow,
        "clock": "wall (CUDA synchronised)" if device.type == "cuda" else "process CPU time",
    }
    for prefix, name, reference, wall in (
        ("time_ratio", method, "ls", False),
        ("plain_ratio", method, "plain", False),
        ("ls_plain_ratio", "ls", "plain", False),
        ("wall_ratio", method, "ls", True),
        ("wall_plain_ratio", method, "plain", True),
    ):
        record.update({f"{prefix}_{k}": v for k, v in timings.ratios(name, reference, wall).items()})
    for name, key in (("plain", "plain"), ("ls", "ls"), (method, "method")):
        record[f"{key}_ms_median"] = 1000 * statistics.median(timings.measured[name])
        record[f"{key}_peak_bytes"] = memory[name]
    record["memory_ratio"] = memory_ratio(memory[method], memory["ls"])
    record["memory_plain_ratio"] = memory_ratio(memory[method], memory["plain"])
    return record


def _itself(step: Callable[[], object]) -> Callable[[], object]:
    return step


def memory_ratio(peak: float, reference: float) -> float | None:
    """``peak / reference``; ``None`` (not NaN) when the reference allocated nothing."""
    return peak / reference if reference > 0 else None


def jobs(args: argparse.Namespace) -> list[tuple[str, int, int, str]]:
    """Every (model, m, d, method) of the sweep: the MLP's widths and task counts, then Scenes."""
    todo = []
    if "mlp" in args.models:
        todo += [("mlp", m, d, method) for d in args.hidden for m in args.tasks for method in args.methods]
    if "scenes" in args.models:
        scenes = scenes_suite(args)
        todo += [("scenes", scenes.num_tasks, scenes.config.width, method) for method in args.methods]
    return todo


def run(args: argparse.Namespace) -> int:
    from .plots import plot_cost  # matplotlib: the 'plot' extra, imported only here

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    scenes = scenes_suite(args)
    models = {
        "mlp": f"ManyTasks MLP (depth 2), Adam, one fixed batch of {args.batch_size}",
        "scenes": f"Scenes SegNet-lite ({'quick' if args.quick else 'default'} preset, width "
        f"{scenes.config.width}, {scenes.config.levels} levels, {scenes.config.data.height}x"
        f"{scenes.config.data.width} pixels), Adam, one fixed batch of {scenes.training.batch_size}",
    }
    payload: dict[str, Any] = {
        "benchmark": "cost",
        "provenance": provenance(args, [args.seed], device),
        "models": {kind: models[kind] for kind in args.models},
        "batch_size": args.batch_size,
        "memory_measure": peak_measure(device),
        "plain_step": "optimizer.zero_grad(); losses = closure(); losses.mean().backward(); optimizer.step()",
        "protocol": "interleaved rounds of blocks (plain, LS, method) after warm-up; ratios within a round",
    }
    records: list[dict[str, Any]] = []
    earlier = earlier_results(args, "cost.json")
    if earlier is not None:
        records = earlier["records"]
        payload["earlier_runs"] = [*earlier.get("earlier_runs", []), earlier["provenance"]]
    done = {(r.get("model", "mlp"), r["num_tasks"], r["hidden"], r["method"]) for r in records}
    clock = device_clock(device)
    for kind, num_tasks, hidden, method in tqdm(
        [job for job in jobs(args) if job not in done], disable=args.no_progress, desc="cost"
    ):
        if kind == "mlp":
            suite, batch = mlp_suite(num_tasks, hidden, args), args.batch_size
        else:
            suite, batch = scenes, scenes.training.batch_size
        record = measure(kind, suite, hidden, batch, method, args, device, clock)
        ratio = record["memory_ratio"]
        records.append(record)
        print(
            f"{kind:6s} m={num_tasks:4d} d={hidden:4d} {method:18s} "
            f"time x{record['plain_ratio_median']:7.2f} plain "
            f"[{record['plain_ratio_q25']:.2f}, {record['plain_ratio_q75']:.2f}], "
            f"x{record['time_ratio_median']:7.2f} LS [{record['time_ratio_q25']:.2f}, "
            f"{record['time_ratio_q75']:.2f}]  memory "
            + (f"x{ratio:6.2f}" if ratio is not None else "n/a")
            + " LS",
            flush=True,
        )
        payload["records"] = records
        write_results(args.out, "cost", payload, records)
    payload["records"] = records
    write_results(args.out, "cost", payload, records)
    mlp = [r for r in records if r.get("model", "mlp") == "mlp"]
    widths = sorted({r["hidden"] for r in mlp})
    for hidden in widths:
        plot_cost(
            [r for r in mlp if r["hidden"] == hidden],
            args.out / cost_figure(hidden, widths),
            title=f"ManyTasks MLP (hidden {hidden}), {payload['provenance']['device']}",
        )
    print(f"results in {args.out}")
    return 0
