"""What every benchmark runner shares: provenance, method construction, training, results files.

* :func:`provenance`: the exact command, git commit, device (CPU model/cores, torch threads,
  CUDA name), torch version and seeds, stored in every results file;
* :func:`build_method`: a balancer by registry name, plus the MARIGOLD presets of ``EXTRA_METHODS``; gradient
  balancers see the model's shared trunk (``model.trunk`` or ``model.backbone``);
* :func:`train_run`: one model trained with one balancer by :class:`~bilevel_mtl.BalancedOptimizer`
  (Adam, the suite's recipe), evaluated after every epoch, weights recorded every ``k`` steps;
  paired seeds: every method of a seed starts from the same parameters, sees the same batches
  and draws the same global random numbers;
* :func:`write_results`: ``<stem>.json`` (everything) and ``<stem>.csv`` (one row per record).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import functools
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bilevel_mtl.balancers import STL, Balancer, GradientBalancer, Marigold
from bilevel_mtl.criteria import FunctionCriterion
from bilevel_mtl.parametrizations import Softmax
from bilevel_mtl.registry import balancer_classes, build_balancer
from bilevel_mtl.training import BalancedOptimizer

from .datasets import Splits, iterate_batches, to_device
from .suites import Suite

EXTRA_METHODS = (
    "marigold-paper",
    "marigold-same-batch",
    "marigold-next-batch",
    "marigold-faithful",
    "marigold-relative",
    "marigold-relative-softmax",
)
"""Method names beyond the registry's: ``marigold`` is the default; ``marigold-paper`` the
paper's Appendix C (:meth:`~bilevel_mtl.Marigold.paper`); ``marigold-same-batch`` the default
measured again on the step's batch after *every* step with FAMO's upper lr 0.025 and weight
decay 1e-3 (FAMO, step for step); ``marigold-next-batch`` the default measured on the next
step's losses instead (no extra forward at all) with the upper lr 0.1 and weight decay 1e-4
chosen for it;
``marigold-relative`` the paper's configuration with the worst-case *relative* change
:math:`\\max_i f_i(A)/f_i(\\theta) - 1` (scale-free across tasks) as its criterion;
``marigold-relative-softmax`` also replaces the loss-scaled softmax
:math:`\\mathrm{softmax}(\\beta u/f)` by the plain :math:`\\mathrm{softmax}(u)`."""


def worst_relative_change(losses_before: torch.Tensor, losses_after: torch.Tensor) -> torch.Tensor:
    """:math:`\\max_i f_i(A)/f_i(\\theta) - 1`: the criterion of ``marigold-relative``."""
    return (losses_after / losses_before - 1.0).max()


def method_names() -> list[str]:
    """Every name :func:`build_method` accepts."""
    return sorted([*balancer_classes(), *EXTRA_METHODS])


def shared_module(model: nn.Module) -> nn.Module | None:
    """The shared encoder of a benchmark model (``trunk`` or ``backbone``), if it has one."""
    for name in ("trunk", "backbone"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def parse_overrides(items: Sequence[str], example: str = "KEY=VALUE") -> dict[str, Any]:
    """``["num_train=300", "width=8"]`` → ``{"num_train": 300, "width": 8}`` (literals, else strings)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a setting must look like {example}, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def split_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"marigold:lr=0.01,beta=2"`` → ``("marigold", {"lr": 0.01, "beta": 2})`` (Python literals)."""
    name, _, options = spec.partition(":")
    kwargs = parse_overrides(list(filter(None, options.split(","))), "name:key=value,key=value")
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; choose from {method_names()}")
    return name, kwargs


def build_method(spec: str, num_tasks: int, model: nn.Module, seed: int = 0, **kwargs: Any) -> Balancer:
    """The balancer ``spec`` (a name, optionally ``name:key=value,...``) for ``model``.

    ``stl`` needs ``task=<index>``. Gradient balancers get ``shared=<the model's trunk>``
    (the usual setting of their papers); a balancer with a ``seed`` argument gets ``seed``.
    """
    name, options = split_method(spec)
    kwargs = {**options, **kwargs}
    if name == "marigold-faithful":
        return build_balancer("marigold_faithful", num_tasks, seed=seed, **kwargs)
    if name == "marigold-same-batch":
        famo = {"measurement": "same-batch", "measure_every": 1, "lr": 0.025, "weight_decay": 1e-3}
        return Marigold(num_tasks, seed=seed, **{**famo, **kwargs})
    if name == "marigold-next-batch":
        next_batch = {"measurement": "next-batch", "lr": 0.1, "weight_decay": 1e-4}
        return Marigold(num_tasks, seed=seed, **{**next_batch, **kwargs})
    if name in ("marigold-relative", "marigold-relative-softmax"):
        kwargs.setdefault("criterion", FunctionCriterion(worst_relative_change))
        if name == "marigold-relative-softmax":
            kwargs.setdefault("parametrization", Softmax(num_tasks))
        name = "marigold-paper"
    if name == "marigold-paper":
        return Marigold.paper(num_tasks, seed=seed, **kwargs)
    if name not in balancer_classes():
        raise ValueError(f"unknown method {name!r}; choose from {method_names()}")
    factory = balancer_classes()[name]
    if isinstance(factory, type) and issubclass(factory, GradientBalancer):
        kwargs.setdefault("shared", shared_module(model))
    if "seed" in inspect.signature(factory).parameters:
        kwargs.setdefault("seed", seed)
    return build_balancer(name, num_tasks, **kwargs)


def device_string(device: torch.device | str = "cpu") -> str:
    """CPU model and cores, torch threads, and the CUDA device name when ``device`` is CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.device(device).type == "cuda":
        text += f"; CUDA {torch.cuda.get_device_name(torch.device(device))}"
    return text


# The code a run executes, relative to the repository root: the library and the harness
# (not the harness's tests or results).
CODE_PATHS = ("src/bilevel_mtl", "benchmarks", ":(exclude)benchmarks/results", ":(exclude)benchmarks/tests")


def git_commit() -> str:
    """The commit of the checkout this harness runs from; ``+dirty`` when the code a run executes
    (:data:`CODE_PATHS`: ``src/bilevel_mtl`` and ``benchmarks``) has uncommitted changes (edits to
    docs, tests or results do not count)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(args: Any, seeds: Sequence[int], device: torch.device | str = "cpu") -> dict[str, Any]:
    """How a results file was made: command, parsed arguments, commit, device, torch version, seeds."""
    arguments = {key: value for key, value in vars(args).items() if not callable(value)}
    return {
        "command": shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        "arguments": json.loads(json.dumps(arguments, default=str)),
        "git_commit": git_commit(),
        "device": device_string(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "seeds": list(seeds),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def pick_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class RunResult:
    """One trained model: metrics per epoch, the averaged final metrics, time and weights."""

    metrics: dict[str, float]
    """Test metrics averaged over the last ``average_last`` epochs."""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    """Per epoch: ``epoch``, cumulative ``train_seconds`` and ``train_cpu_seconds``, ``metrics``."""
    weights: list[dict[str, Any]] = field(default_factory=list)
    """Every ``weight_every`` steps: ``step`` and the task ``weights`` the update used."""
    train_seconds: float = 0.0
    """Training wall time (evaluation excluded)."""
    train_cpu_seconds: float = 0.0
    """Training CPU time of the process (all threads): on a shared machine, the wall time
    mostly measures the wait for a core; CPU time measures the work."""
    steps: int = 0


@contextlib.contextmanager
def paired_randomness(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """The global torch random state (CPU, and ``device`` on CUDA) seeded from ``seed`` for one
    run and restored after it, so that what draws from it while training (dropout, a balancer
    without its own generator) draws the same numbers for every method of a seed. The stream
    is apart from the initialisation's (:meth:`~benchmarks.suites.Suite.model` seeds ``seed``)."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 2**32)
        yield


def train_run(
    suite: Suite[Any],
    data: Splits,
    make_balancer: Callable[[nn.Module], Balancer],
    seed: int,
    epochs: int | None = None,
    average_last: int = 1,
    weight_every: int = 10,
    device: torch.device | str = "cpu",
    description: str = "",
    progress: bool = True,
) -> RunResult:
    """Train ``suite.model(seed)`` with ``make_balancer(model)`` and Adam (the suite's recipe).

    The test set is evaluated after every epoch (evaluation time is not training time);
    the final metrics average the last ``average_last`` epochs. Every method of a seed starts
    from the same parameters, sees the same batches in the same order, and draws the same
    global random numbers (:func:`paired_randomness`).
    """
    epochs = suite.training.epochs if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if average_last < 1:
        raise ValueError(f"average_last must be >= 1, got {average_last}")
    recipe = suite.training
    with paired_randomness(seed, device):
        model = suite.model(seed).to(device)
        balancer = make_balancer(model).to(device)
        optimizer = torch.optim.Adam(
            model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
        )
        trainer = BalancedOptimizer(model, optimizer, balancer)
        result = RunResult(metrics={})
        per_step = balancer.num_batches  # MoDo, SDMGrad: independent batches per step, as in their papers
        batches_per_epoch = -(-len(data.train) // recipe.batch_size)  # type: ignore[arg-type]
        total = epochs * (batches_per_epoch // per_step)
        bar = tqdm(total=total, desc=description, disable=not progress, leave=False, mininterval=1.0)
        model.train()
        for epoch in range(epochs):
            start, cpu = time.perf_counter(), time.process_time()
            batches = iterate_batches(data.train, recipe.batch_size, shuffle=True, seed=seed * 1000 + epoch)
            for closure in _closures(suite, model, batches, per_step, device):
                record = trainer.step(closure)
                if result.steps % weight_every == 0:
                    result.weights.append({"step": result.steps, "weights": record.weights.tolist()})
                result.steps += 1
                bar.update()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            result.train_seconds += time.perf_counter() - start
            result.train_cpu_seconds += time.process_time() - cpu
            scores = suite.evaluate(model, data.test)
            result.epochs.append(
                {
                    "epoch": epoch + 1,
                    "train_seconds": result.train_seconds,
                    "train_cpu_seconds": result.train_cpu_seconds,
                    "metrics": scores,
                }
            )
        bar.close()
    last = result.epochs[-average_last:]
    result.metrics = {name: sum(e["metrics"][name] for e in last) / len(last) for name in last[0]["metrics"]}
    return result


def _closures(
    suite: Suite[Any], model: nn.Module, batches: Iterator[Any], per_step: int, device: torch.device | str
) -> Iterator[Callable[[], torch.Tensor]]:
    """One closure per step: the task losses ``[m]`` of one batch, or ``[b, m]`` of ``b =
    per_step`` consecutive batches (an epoch's incomplete last group is dropped)."""

    def losses(moved: list[Any]) -> torch.Tensor:
        if per_step == 1:
            ((inputs, targets),) = moved
            return suite.task_losses(model(inputs), targets)
        return torch.stack([suite.task_losses(model(x), y) for x, y in moved])

    groups = zip(*[iter(batches)] * per_step, strict=False)  # per_step = 1: each batch alone
    for group in groups:
        yield functools.partial(losses, [to_device(batch, device) for batch in group])


def _single_task(num_tasks: int, task: int, model: nn.Module) -> Balancer:
    return STL(num_tasks, task=task)


def train_stl(suite: Suite[Any], data: Splits, seed: int, progress: bool = True, **kwargs: Any) -> RunResult:
    """Single-task learning: one model per task; each task's metrics come from its own model.

    Time is the sum over the models; epoch curves are merged the same way.
    """
    runs = [
        train_run(
            suite,
            data,
            functools.partial(_single_task, suite.num_tasks, task),
            seed,
            description=f"stl[{name}] seed {seed}",
            progress=progress,
            **kwargs,
        )
        for task, name in enumerate(suite.tasks)
    ]
    owner = {spec.name: suite.tasks.index(spec.task) for spec in suite.metrics}
    epochs = []
    for index in range(len(runs[0].epochs)):
        metrics = {name: runs[task].epochs[index]["metrics"][name] for name, task in owner.items()}
        seconds = sum(run.epochs[index]["train_seconds"] for run in runs)
        cpu = sum(run.epochs[index]["train_cpu_seconds"] for run in runs)
        epochs.append(
            {"epoch": index + 1, "train_seconds": seconds, "train_cpu_seconds": cpu, "metrics": metrics}
        )
    return RunResult(
        metrics={name: runs[task].metrics[name] for name, task in owner.items()},
        epochs=epochs,
        weights=[],
        train_seconds=sum(run.train_seconds for run in runs),
        train_cpu_seconds=sum(run.train_cpu_seconds for run in runs),
        steps=sum(run.steps for run in runs),
    )


def flat_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records with only their scalar fields (the CSV view)."""
    return [
        {key: value for key, value in record.items() if isinstance(value, str | int | float | bool)}
        for record in records
    ]


def write_results(
    out: Path, stem: str, payload: Mapping[str, Any], records: Sequence[Mapping[str, Any]]
) -> None:
    """Write ``out/<stem>.json`` (``payload``) and ``out/<stem>.csv`` (the scalar fields of ``records``).

    Both are written to a temporary name first and renamed, so a reader never sees half a file.
    """
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    tmp.replace(json_path)
    rows = flat_rows(records)
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    csv_path = out / f"{stem}.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 0.0
    return float(tensor.mean()), std
