r"""``python -m benchmarks cost``: per-step time and peak memory of each method relative to LS, against m.

Protocol (``BENCHMARKS.md``, cost): for every number of tasks ``m`` (ManyTasks MLP, and
every ``--hidden`` width d), LS and the method each get their own copy of the same
model, Adam and one fixed batch; after ``--warmup`` steps of each, the steps are timed
**interleaved in one process** (LS, method, LS, method, ...), so that machine noise hits
both alike. A sample is a block of ``k`` consecutive steps, ``k`` chosen per method in the
warm-up so that a block takes at least ``--block-ms``. A ratio is method/LS (time per step)
of one adjacent pair of blocks; the record gives the median ratio, its interquartile range
and the median absolute time per step. A method slower than ``--slow`` seconds a step is
measured with fewer steps (``slow`` in the record), one slower than ``--give-up`` with a
single pair (``pairs`` = 1). ``--resume`` keeps the finished records of a run made with the
same batch size, ``--set``, seed, device and threads.

Clock: on CUDA, wall time with ``torch.cuda.synchronize()`` around each block. On CPU,
the process's CPU time (``time.process_time``, all threads) is the primary measure: on a
shared machine a wall-clock sample of a millisecond-long step is mostly the time the
process waited for a core, which says nothing about the method. The wall-clock ratios
are recorded as well (``wall_ratio_*``).

Memory, the peak *during a step* above what is resident before it (parameters,
optimizer state, the batch), as a ratio to LS's:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before the step;
* CPU (Linux): the process's peak resident set (``VmHWM``), reset through
  ``/proc/self/clear_refs`` before the step, minus the resident set (``VmRSS``) before it.
  glibc is told to serve blocks of 64 KiB and more by ``mmap`` (fixed threshold) and
  trimmed before each measurement, so memory freed by earlier steps is returned to the
  system and does not hide the next step's peak. Small allocations below 64 KiB may
  still be served from retained heap; the measure is a page-granular upper envelope of
  what the step touched.

Results: ``cost.json``, ``cost.csv``, ``cost.png``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import math
import statistics
import time
from collections.abc import Callable
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
from .quality import DEFAULT_METHODS as QUALITY_METHODS
from .runs import build_method, method_names, pick_device, provenance, write_results
from .suites import Suite

DEFAULT_METHODS = tuple(m for m in QUALITY_METHODS if m not in ("stl", "ls"))
"""The quality suite's methods but the references (LS is what every ratio divides by)."""
_M_MMAP_THRESHOLD = -3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Per-step time and peak memory relative to LS against the number of tasks."
    parser.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), help=f"one of {method_names()}"
    )
    parser.add_argument(
        "--tasks",
        type=positive_int,
        nargs="+",
        default=None,
        help="numbers of tasks m (default 2 8 32 128 256; quick: 2 8)",
    )
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[64], help="MLP widths d to sweep")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--warmup", type=positive_int, default=3, help="untimed steps of each method first")
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="timed (LS, method) pairs, at most (default 20; quick: 3)",
    )
    parser.add_argument(
        "--block-ms", type=positive_float, default=20.0, help="LS time of one timed block, at least"
    )
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=20.0,
        help="seconds of timed steps per (m, d, method), at most",
    )
    parser.add_argument(
        "--slow", type=positive_float, default=1.0, help="seconds a step beyond which fewer are timed"
    )
    parser.add_argument(
        "--give-up", type=positive_float, default=30.0, help="seconds a step beyond which one pair is timed"
    )
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:<index> or auto")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI-sized: m in {2, 8}, 3 pairs (unless given)")
    parser.add_argument("--no-progress", action="store_true")
    add_output_arguments(parser, "cost", resume=True)


def pair_suite(num_tasks: int, hidden: int, args: argparse.Namespace) -> Suite[Any]:
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


# What the records of a run depend on: a resumed run must use the same.
_SETTINGS = {
    "batch_size": "--batch-size",
    "overrides": "--set",
    "seed": "--seed",
    "device": "--device",
    "threads": "--threads",
}


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in the defaults and ``--out``."""
    if args.tasks is None:
        args.tasks = [2, 8] if args.quick else [2, 8, 32, 128, 256]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    for num_tasks in args.tasks:
        for hidden in args.hidden:
            check_methods(["ls", *args.methods], pair_suite(num_tasks, hidden, args), args.seed)
    earlier = earlier_results(args, "cost.json")
    if earlier is not None:
        check_same_settings(earlier, args, _SETTINGS, args.out / "cost.json")
    args.out = output_folder(args, "cost", "cost.json")


class MemoryProbe:
    """Peak memory of one call above the memory resident before it (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc: Any = None
        if device.type == "cpu":
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                self.libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
            except OSError:
                self.libc = None

    @property
    def measure(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated - memory_allocated before the step"
        return (
            "peak RSS (VmHWM, reset by /proc/self/clear_refs) - RSS before the step; "
            "glibc mmap threshold 64 KiB"
        )

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(f"{field} not in /proc/self/status")

    def __call__(self, step: Callable[[], Any]) -> float:
        """Bytes above the resident baseline at the peak of ``step()`` (NaN when unmeasurable)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            step()
            torch.cuda.synchronize(self.device)
            return float(torch.cuda.max_memory_allocated(self.device) - before)
        try:
            if self.libc is not None:
                self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            before = self._status("VmRSS")
            step()
            return float(self._status("VmHWM") - before)
        except OSError:
            return float("nan")


def _quantile(values: list[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def measure_pair(
    num_tasks: int,
    hidden: int,
    method: str,
    args: argparse.Namespace,
    device: torch.device,
    probe: MemoryProbe,
    repeats: int,
) -> dict[str, Any]:
    """Interleaved timing and memory of LS and ``method`` on one batch of the m-task MLP."""
    suite = pair_suite(num_tasks, hidden, args)
    data = suite.datasets(seed=args.seed, progress=False)
    inputs, targets = to_device(next(iter(iterate_batches(data.train, args.batch_size))), device)
    trainers = {}
    for name in ("ls", method):
        model = suite.model(args.seed).to(device)
        balancer = build_method(name, num_tasks, model, args.seed).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        trainer = BalancedOptimizer(model, optimizer, balancer)

        def closure(model: Any = model) -> torch.Tensor:
            return suite.task_losses(model(inputs), targets)

        trainers[name] = (trainer, closure)

    def step(name: str) -> None:
        trainer, closure = trainers[name]
        trainer.step(closure)

    cuda = device.type == "cuda"

    def block(name: str, steps: int) -> tuple[float, float]:
        """(clock, wall) seconds per step over ``steps`` steps; the clock is CPU time on CPU."""
        if cuda:
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step(name)
        if cuda:
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return (wall if cuda else cpu) / steps, wall / steps

    # warm-up; a method slower than --slow seconds a step gets one warm-up step, the minimum
    # of 3 pairs, one-step blocks and one memory probe, so that m = 256 finishes
    warm = {name: [block(name, 1)[0]] for name in ("ls", method)}
    slow = warm[method][0] > args.slow
    for _ in range(0 if slow else args.warmup - 1):
        for name in ("ls", method):
            warm[name].append(block(name, 1)[0])
    steps = {
        name: max(1, math.ceil(args.block_ms / 1000 / max(min(warm[name]), 1e-6))) for name in ("ls", method)
    }
    clock: dict[str, list[float]] = {"ls": [], method: []}
    wall: dict[str, list[float]] = {"ls": [], method: []}
    spent = 0.0
    pairs = 1 if warm[method][0] > args.give_up else 3 if slow else repeats
    while len(clock["ls"]) < pairs and (len(clock["ls"]) < min(3, pairs) or spent < args.budget):
        for name in ("ls", method):
            seconds, elapsed = block(name, steps[name])
            clock[name].append(seconds)
            wall[name].append(elapsed)
            spent += elapsed * steps[name]
    # the largest of three probes: a peak is a maximum, and RSS is counted in whole pages
    probes = 1 if slow else 3
    memory = {
        name: max(probe(functools.partial(step, name)) for _ in range(probes)) for name in ("ls", method)
    }
    ratios = [a / b for a, b in zip(clock[method], clock["ls"], strict=True)]
    wall_ratios = [a / b for a, b in zip(wall[method], wall["ls"], strict=True)]
    params = sum(p.numel() for p in trainers["ls"][0].model.parameters())
    return {
        "method": method,
        "num_tasks": num_tasks,
        "hidden": hidden,
        "parameters": params,
        "pairs": len(ratios),
        "steps_per_block": steps[method],
        "ls_steps_per_block": steps["ls"],
        "slow": slow,
        "clock": "wall (CUDA synchronised)" if cuda else "process CPU time",
        "time_ratio_median": statistics.median(ratios),
        "time_ratio_q25": _quantile(ratios, 0.25),
        "time_ratio_q75": _quantile(ratios, 0.75),
        "wall_ratio_median": statistics.median(wall_ratios),
        "wall_ratio_q25": _quantile(wall_ratios, 0.25),
        "wall_ratio_q75": _quantile(wall_ratios, 0.75),
        "ls_ms_median": 1000 * statistics.median(clock["ls"]),
        "method_ms_median": 1000 * statistics.median(clock[method]),
        "ls_peak_bytes": memory["ls"],
        "method_peak_bytes": memory[method],
        "memory_ratio": memory[method] / memory["ls"] if memory["ls"] > 0 else float("nan"),
    }


def run(args: argparse.Namespace) -> int:
    from .plots import plot_cost  # matplotlib: the 'plot' extra, imported only here

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    probe = MemoryProbe(device)
    payload: dict[str, Any] = {
        "benchmark": "cost",
        "provenance": provenance(args, [args.seed], device),
        "model": "ManyTasks MLP (depth 2), Adam, one fixed batch",
        "batch_size": args.batch_size,
        "memory_measure": probe.measure,
        "protocol": "interleaved LS/method blocks of steps after warm-up; ratios of adjacent pairs",
    }
    records: list[dict[str, Any]] = []
    earlier = earlier_results(args, "cost.json")
    if earlier is not None:
        records = earlier["records"]
        payload["earlier_runs"] = [*earlier.get("earlier_runs", []), earlier["provenance"]]
    done = {(r["num_tasks"], r["hidden"], r["method"]) for r in records}
    jobs = [(m, d, method) for d in args.hidden for m in args.tasks for method in args.methods]
    jobs = [job for job in jobs if job not in done]
    for num_tasks, hidden, method in tqdm(jobs, disable=args.no_progress, desc="cost"):
        record = measure_pair(num_tasks, hidden, method, args, device, probe, args.repeats)
        records.append(record)
        print(
            f"m={num_tasks:4d} d={hidden:4d} {method:18s} time x{record['time_ratio_median']:6.2f} "
            f"[{record['time_ratio_q25']:.2f}, {record['time_ratio_q75']:.2f}]  "
            f"memory x{record['memory_ratio']:6.2f}",
            flush=True,
        )
        payload["records"] = records
        write_results(args.out, "cost", payload, records)
    payload["records"] = records
    write_results(args.out, "cost", payload, records)
    for hidden in args.hidden:
        name = "cost.png" if hidden == args.hidden[0] else f"cost_d{hidden}.png"
        plot_cost(
            [r for r in records if r["hidden"] == hidden],
            args.out / name,
            title=f"ManyTasks MLP (hidden {hidden}), {payload['provenance']['device']}",
        )
    print(f"results in {args.out}")
    return 0
