"""``bilevel-mtl demo``: LS and MARIGOLD side by side on a built-in multi-task problem.

The problem: ``x ∈ R^16``, three regression tasks on a shared representation —
two aligned tasks and one partly conflicting with them, on loss scales 1, 10⁻² and
10² — learnt by an MLP trunk with one linear head per task, trained with Adam.
Every method starts from the same weights, sees the same mini-batches, and its
steps are interleaved with the others' and with those of a plain PyTorch loop
(``losses.mean().backward(); optimizer.step()``), so the per-step time ratios against
the plain loop and LS come from one process under the same load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from ._argtypes import nonnegative_int, positive_float, positive_int
from .balancers import LS, Balancer, Marigold
from .training import BalancedOptimizer

SCALES = (1.0, 0.1, 10.0)  # target scales (loss scales 1, 1e-2, 1e2)


def make_problem(seed: int, n_train: int = 4096, n_test: int = 2048) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inputs and ``[n, 3]`` targets of the demo's regression tasks (train, then test)."""
    g = torch.Generator().manual_seed(seed)
    d, k = 16, 8
    mixing = torch.randn(d, k, generator=g) / d**0.5
    heads = torch.randn(3, k, generator=g)
    heads[1] = heads[0] + 0.5 * torch.randn(k, generator=g)  # aligned with task 0
    heads[2] = -0.7 * heads[0] + 0.7 * torch.randn(k, generator=g)  # partly conflicting
    x = torch.randn(n_train + n_test, d, generator=g)
    z = torch.tanh(2 * x @ mixing)
    y = torch.stack([torch.sin(z @ h) for h in heads], dim=1)
    y = (y + 0.1 * torch.randn(y.shape, generator=g)) * torch.tensor(SCALES)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class DemoModel(nn.Module):
    """A shared MLP trunk with one linear head per task."""

    def __init__(self, num_tasks: int = 3, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.Linear(width, num_tasks)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out


def task_losses(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-task mean squared errors, shape ``[3]``."""
    return ((prediction - target) ** 2).mean(dim=0)


@dataclass
class _Run:
    name: str
    model: DemoModel
    trainer: BalancedOptimizer
    seconds: list[float] = field(default_factory=list)


def _methods(lr: float) -> dict[str, Callable[[], Balancer]]:
    return {
        "LS": lambda: LS(3),
        "MARIGOLD": lambda: Marigold(3),
        "MARIGOLD paper": lambda: Marigold.paper(3, lr=lr),
    }


@dataclass
class MethodResult:
    """One method's row of the demo table."""

    test_mse: list[float]
    relative_mse: list[float]
    weights: list[float]
    time_ratio: float
    plain_ratio: float
    ms_per_step: float


def train(
    steps: int,
    batch_size: int,
    upper_lr: float,
    seed: int,
    progress: bool = True,
    methods: dict[str, Callable[[], Balancer]] | None = None,
) -> dict[str, MethodResult]:
    """Train every method on the same batches, interleaved; return each method's numbers.

    ``methods`` (name → balancer factory; the first one is the reference of ``time_ratio``;
    ``plain_ratio`` is against a plain loop on the same batches) defaults
    to LS, :class:`~bilevel_mtl.Marigold` (the default) and :meth:`~bilevel_mtl.Marigold.paper`
    (the paper's Appendix C) with upper learning rate ``upper_lr``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    x, y, x_test, y_test = make_problem(seed)
    runs = []
    for name, factory in (methods or _methods(upper_lr)).items():
        torch.manual_seed(seed)
        model = DemoModel()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        runs.append(_Run(name, model, BalancedOptimizer(model, optimizer, factory())))
    torch.manual_seed(seed)
    plain_model = DemoModel()
    plain_optimizer = torch.optim.Adam(plain_model.parameters(), lr=1e-3)
    plain_seconds = []
    from tqdm import tqdm  # on use: `import bilevel_mtl` and `bilevel-mtl list` do not need it

    g = torch.Generator().manual_seed(seed + 1)
    last_weights: dict[str, Tensor] = {}
    for _ in tqdm(range(steps), desc="training", disable=not progress, unit="step"):
        index = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        xb, yb = x[index], y[index]
        start = time.perf_counter()
        plain_optimizer.zero_grad()
        _batch_losses(plain_model, xb, yb).mean().backward()  # type: ignore[no-untyped-call]
        plain_optimizer.step()
        plain_seconds.append(time.perf_counter() - start)
        for run in runs:
            start = time.perf_counter()
            record = run.trainer.step(partial(_batch_losses, run.model, xb, yb))
            run.seconds.append(time.perf_counter() - start)
            last_weights[run.name] = record.weights
    warm = steps // 10  # warm-up steps left out of the timings
    ls_times = runs[0].seconds[warm:]
    results = {}
    for run in runs:
        with torch.no_grad():
            test = task_losses(run.model(x_test), y_test)
        ratios = [t / t_ls for t, t_ls in zip(run.seconds[warm:], ls_times, strict=True)]
        plain = [t / t_p for t, t_p in zip(run.seconds[warm:], plain_seconds[warm:], strict=True)]
        results[run.name] = MethodResult(
            test_mse=test.tolist(),
            relative_mse=(test / torch.tensor(SCALES) ** 2).tolist(),
            weights=last_weights[run.name].tolist(),
            time_ratio=statistics.median(ratios),
            plain_ratio=statistics.median(plain),
            ms_per_step=1e3 * statistics.median(run.seconds[warm:]),
        )
    return results


def _batch_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return task_losses(model(x), y)


def format_table(results: dict[str, MethodResult]) -> str:
    """The side-by-side table the demo prints."""
    values = list(results.values())
    rows = [
        (f"task {t} test MSE (scale {SCALES[t] ** 2:g})", [f"{r.test_mse[t]:.4f}" for r in values])
        for t in range(len(SCALES))
    ]
    rows += [
        ("mean relative MSE", [f"{statistics.mean(r.relative_mse):.4f}" for r in values]),
        ("final weights", ["/".join(f"{w:.3f}" for w in r.weights) for r in values]),
        ("time per step (ms, median)", [f"{r.ms_per_step:.2f}" for r in values]),
        ("time per step / plain loop (median)", [f"{r.plain_ratio:.2f}" for r in values]),
        ("time per step / LS (median)", [f"{r.time_ratio:.2f}" for r in values]),
    ]
    width = max(len(label) for label, _ in rows)
    cols = [max(len(name), *(len(cells[i]) for _, cells in rows)) for i, name in enumerate(results)]

    def line(label: str, cells: list[str]) -> str:
        return label.ljust(width) + " | " + " | ".join(c.rjust(n) for c, n in zip(cells, cols, strict=True))

    header = line("", list(results))
    return "\n".join([header, "-" * len(header), *(line(label, cells) for label, cells in rows)])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=3000, help="training steps per method")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument(
        "--upper-lr", type=positive_float, default=1e-4, help="the paper preset's upper-level Adam lr"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    print(
        f"bilevel-mtl demo: 3 regression tasks (loss scales 1, 1e-2, 1e2; task 2 conflicts), "
        f"MLP + Adam(lr=1e-3), {args.steps} steps of batch {args.batch_size}, seed {args.seed}"
    )
    results = train(args.steps, args.batch_size, args.upper_lr, args.seed, progress=not args.no_progress)
    print(format_table(results))
    print(
        "relative MSE = test MSE / scale²; times: medians of interleaved steps, one CPU thread; "
        "a step of this small model takes ~0.5 ms, so the balancers' fixed per-step overhead "
        "shows in full (on a conv model MARIGOLD costs ~1.0x a plain loop: docs/benchmarks/cost.md)"
    )
    return 0
