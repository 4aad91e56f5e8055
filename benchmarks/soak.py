r"""``python -m benchmarks soak``: long runs of every stateful balancer, watching for growth.

Each configuration whose class declares ``stateful = True`` (:func:`stateful_configs`:
every such class of :func:`bilevel_mtl.registry.balancer_classes` with its defaults,
plus GradDrop on the encoder's output, the one that hooks the model) trains a small
model (5 inputs, a trunk of width 8, 3 regression heads, Adam, batches of 12 cycled
from a fixed pool of 8) with :class:`~bilevel_mtl.BalancedOptimizer` for ``--steps`` steps, in a
process of its own (spawned: no method's heap hides another's growth). After every
``--window`` steps it records

* the process's resident memory (RSS, ``/proc/self/statm``) and the median wall time
  and process CPU time of the window's steps (machine-dependent: read as trends; on a
  shared machine the wall time also measures the wait for a core, the CPU time less so);
* deterministic counts, after a garbage collection: live tensors and gc-tracked
  objects, hooks on the model, its parameters and the optimizer, and the
  :func:`footprint` of the trainer and of the last step's record (the length of every
  container and the size of every tensor they hold, by path).

A run *grows* when a deterministic count after the last window exceeds the one after
``--warmup`` steps, or a footprint path is new or larger; the RSS and step-time trends
are reported beside it. Results: ``soak.json`` and ``soak.png`` (RSS and the median step
times against the step, one line per configuration).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bilevel_mtl._argtypes import positive_int
from bilevel_mtl.balancers import Balancer, GradDrop
from bilevel_mtl.registry import balancer_classes
from bilevel_mtl.training import BalancedOptimizer, StepRecord

from .checks import UsageError, add_output_arguments, output_folder
from .runs import provenance, write_results

NUM_TASKS = 3
INPUTS = 5
WIDTH = 8
BATCH = 12
POOL = 8
"""Batches in the fixed pool the runs cycle through."""


class Net(nn.Module):
    """A shared trunk and one linear head per task (``forward`` gives ``[batch, m]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(INPUTS, WIDTH), nn.Tanh())
        self.heads = nn.Linear(WIDTH, NUM_TASKS)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out


def stateful_configs() -> dict[str, Callable[[Net], Balancer]]:
    """Every stateful configuration by name: a builder of its balancer for a :class:`Net`."""
    arguments: dict[str, Callable[[Net], Any]] = {"task": lambda net: 0, "shared": lambda net: net.trunk}
    configs: dict[str, Callable[[Net], Balancer]] = {}
    for name, cls in balancer_classes().items():
        if not cls.stateful:
            continue
        required = [arg for arg, what in cls.requires.items() if not what.startswith("optional")]

        def build(net: Net, cls: type[Balancer] = cls, required: list[str] = required) -> Balancer:
            return cls(NUM_TASKS, **{arg: arguments[arg](net) for arg in required})

        configs[name] = build
    configs["graddrop_representation"] = lambda net: GradDrop(
        NUM_TASKS, shared=net.trunk, representation=True
    )
    return configs


def make_run(name: str, seed: int = 0) -> tuple[BalancedOptimizer, Callable[[], StepRecord]]:
    """The trainer of configuration ``name`` and a call that trains its next step."""
    torch.manual_seed(seed)
    net = Net()
    balancer = stateful_configs()[name](net)
    trainer = BalancedOptimizer(net, torch.optim.Adam(net.parameters(), lr=1e-3), balancer)
    batches = balancer.num_batches
    g = torch.Generator().manual_seed(seed)
    pool = [
        (
            torch.randn(batches, BATCH, INPUTS, generator=g),
            torch.randn(batches, BATCH, NUM_TASKS, generator=g),
        )
        for _ in range(POOL)
    ]
    cycle = itertools.cycle(pool)

    def step() -> StepRecord:
        x, y = next(cycle)

        def closure() -> Tensor:
            losses: Tensor = ((net(x) - y) ** 2).mean(1)  # [batches, m]
            return losses[0] if batches == 1 else losses

        return trainer.step(closure)

    return trainer, step


def footprint(root: object, name: str = "root", depth: int = 8) -> dict[str, int]:
    """The length of every container and the numel of every tensor reachable from ``root``, by path.

    Walks lists, tuples, sets, dicts, named tuples, ``nn.Module`` s, optimizers and the
    library's own objects (their attributes), ``depth`` levels deep, each object once. A
    history that grows shows as a larger length or as new paths.
    """
    sizes: dict[str, int] = {}
    seen: set[int] = set()

    def visit(obj: object, path: str, left: int) -> None:
        if isinstance(obj, Tensor):
            sizes[path] = obj.numel()
            return
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        items: Iterable[tuple[object, object]]
        if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # a named tuple (a step record)
            items = obj._asdict().items()
        elif isinstance(obj, dict):
            items = obj.items()
        elif isinstance(obj, list | tuple):
            items = enumerate(obj)
        elif isinstance(obj, set | frozenset):
            items = enumerate(sorted(obj, key=repr))
        elif _walkable(obj):
            items = vars(obj).items()
        else:
            return
        if isinstance(obj, dict | list | tuple | set | frozenset):
            sizes[path] = len(obj)
        for index, (key, value) in enumerate(items):
            visit(value, f"{path}.{key}" if isinstance(key, str | int) else f"{path}[{index}]", left - 1)

    visit(root, name, depth)
    return sizes


def _walkable(obj: object) -> bool:
    """Objects whose attributes :func:`footprint` walks: modules, optimizers, the library's own."""
    library = type(obj).__module__.startswith("bilevel_mtl")
    return (isinstance(obj, nn.Module | torch.optim.Optimizer) or library) and hasattr(obj, "__dict__")


def hooks(trainer: BalancedOptimizer) -> int:
    """Hooks registered on the model's modules and parameters, the optimizer, and globally on modules."""
    holders: list[object] = [*trainer.model.modules(), trainer.optimizer, nn.modules.module]
    count = sum(_hook_dicts(vars(holder)) for holder in holders)
    for param in trainer.model.parameters():
        count += _hook_count(param._backward_hooks) + _hook_count(param._post_accumulate_grad_hooks)
    return count


def _hook_dicts(namespace: Mapping[str, Any]) -> int:
    return sum(_hook_count(value) for key, value in namespace.items() if "hook" in key)


def _hook_count(value: object) -> int:
    return len(value) if isinstance(value, dict) else 0


COUNTS = ("tensors", "gc_objects", "hooks")


def counts(trainer: BalancedOptimizer, record: StepRecord) -> dict[str, int]:
    """The deterministic counts of a run now, after a garbage collection: ``COUNTS`` and
    ``"footprint <path>"`` entries of the trainer and of the last record.

    A flat ``str -> int`` dict, which the garbage collector does not track: keeping earlier
    counts does not change later ones.
    """
    gc.collect()
    objects = gc.get_objects()
    found = {
        "tensors": sum(issubclass(type(obj), Tensor) for obj in objects),
        "gc_objects": len(objects),
        "hooks": hooks(trainer),
    }
    del objects
    sizes = {**footprint(trainer, "trainer"), **footprint(record, "record")}
    return found | {f"footprint {path}": size for path, size in sizes.items()}


def growth(earlier: Mapping[str, int], later: Mapping[str, int]) -> list[str]:
    """What grew from ``earlier`` to ``later`` (two :func:`counts`), in words; empty if nothing."""
    return [
        f"{key} {earlier.get(key, 'absent')} -> {size}"
        for key, size in later.items()
        if key not in earlier or size > earlier[key]
    ]


def rss_bytes() -> int:
    """The process's resident set size (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def soak_one(name: str, steps: int, window: int, warmup: int, progress: bool = True) -> dict[str, Any]:
    """Train configuration ``name`` for ``steps`` steps; the per-window series and the verdict.

    Counts are taken at the end of each window; the baseline is the window ending at step
    ``warmup`` (a multiple of ``window``, two windows at least, so that the harness's own
    first-time objects, its first window's record and print, exist by then too).
    """
    torch.set_num_threads(1)
    trainer, step = make_run(name)
    windows: list[dict[str, Any]] = [{"step": 0, "rss_bytes": rss_bytes()}]
    baseline: dict[str, int] | None = None
    wall: list[float] = []
    cpu: list[float] = []
    latest: dict[str, int] = {}
    for index in range(1, steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        record = step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if index % window:
            continue
        latest = counts(trainer, record)
        if index == warmup:
            baseline = latest
        windows.append(
            {
                "step": index,
                "rss_bytes": rss_bytes(),
                "median_step_ms": 1e3 * statistics.median(wall),
                "median_step_cpu_ms": 1e3 * statistics.median(cpu),
                **{key: latest[key] for key in COUNTS},
            }
        )
        wall.clear()
        cpu.clear()
        if progress:
            now = windows[-1]
            print(
                f"{name:24s} step {index:6d}/{steps}  rss {now['rss_bytes'] / 2**20:7.1f} MiB  "
                f"median {now['median_step_ms']:6.3f} ms (cpu {now['median_step_cpu_ms']:6.3f})  "
                f"tensors {latest['tensors']}  gc objects {latest['gc_objects']}  hooks {latest['hooks']}",
                flush=True,
            )
    assert baseline is not None, "warmup must be a multiple of window, within steps"
    grown = growth(baseline, latest)
    return {
        "method": name,
        "steps": steps,
        "warmup": warmup,
        "rss_start_bytes": windows[0]["rss_bytes"],
        "rss_warm_bytes": next(w["rss_bytes"] for w in windows if w["step"] == warmup),
        "rss_end_bytes": windows[-1]["rss_bytes"],
        "first_window_ms": windows[1]["median_step_ms"],
        "last_window_ms": windows[-1]["median_step_ms"],
        "first_window_cpu_ms": windows[1]["median_step_cpu_ms"],
        "last_window_cpu_ms": windows[-1]["median_step_cpu_ms"],
        "counts_warm": {key: baseline[key] for key in COUNTS},
        "counts_end": {key: latest[key] for key in COUNTS},
        "footprint_paths": len(latest) - len(COUNTS),
        "grows": bool(grown),
        "growth": grown,
        "windows": windows,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Long runs of every stateful balancer: memory, step time and counts against the step."
    )
    configs = list(stateful_configs())
    parser.add_argument("--methods", nargs="+", default=configs, choices=configs)
    parser.add_argument("--steps", type=positive_int, default=20_000, help="steps per method")
    parser.add_argument("--window", type=positive_int, default=500, help="steps per recorded window")
    parser.add_argument("--warmup", type=positive_int, default=1000, help="steps before the baseline counts")
    add_output_arguments(parser, "soak")
    parser.add_argument("--no-progress", action="store_true")


def check(args: argparse.Namespace) -> None:
    """Every value before any work (:mod:`benchmarks.checks`); fills in ``--out``."""
    if args.steps % args.window or args.warmup % args.window:
        raise UsageError("--window", "--steps and --warmup must be multiples of it")
    if not 2 * args.window <= args.warmup <= args.steps:
        raise UsageError("--warmup", "must lie between 2 windows and --steps")
    args.out = output_folder(args, "soak", "soak.json")


def run(args: argparse.Namespace) -> int:
    from .plots import plot_soak  # matplotlib: the 'plot' extra, imported only here

    torch.set_num_threads(1)  # as in each method's process (the provenance says so)
    payload: dict[str, Any] = {
        "benchmark": "soak",
        "provenance": provenance(args, [0]),
        "model": f"MLP {INPUTS} -> {WIDTH} (tanh) -> {NUM_TASKS} heads, Adam lr 1e-3, batch {BATCH}",
        "records": [],
    }
    records: list[dict[str, Any]] = payload["records"]
    context = multiprocessing.get_context("spawn")
    for name in args.methods:
        with context.Pool(1) as pool:  # a fresh process per method
            record = pool.apply(soak_one, (name, args.steps, args.window, args.warmup, not args.no_progress))
        records.append(record)
        print(summary_line(record), flush=True)
        write_results(args.out, "soak", payload, records)
        plot_soak(records, args.out / "soak.png", title=payload["provenance"]["device"])
    print(f"results in {args.out}")
    return 0


def summary_line(record: Mapping[str, Any]) -> str:
    """One line per method: RSS start → end, first and last window's median step times, the verdict."""
    start, warm, end = (record[f"rss_{key}_bytes"] / 2**20 for key in ("start", "warm", "end"))
    verdict = "grows: " + "; ".join(record["growth"][:5]) if record["grows"] else "no growth"
    return (
        f"{record['method']:24s} rss {start:.1f} -> {warm:.1f} (step {record['warmup']}) -> {end:.1f} MiB; "
        f"median step {record['first_window_ms']:.3f} -> {record['last_window_ms']:.3f} ms "
        f"(cpu {record['first_window_cpu_ms']:.3f} -> {record['last_window_cpu_ms']:.3f}); {verdict}"
    )


if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main(["soak", *sys.argv[1:]]))
