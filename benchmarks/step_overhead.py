"""Per-step cost of ``BalancedOptimizer`` against a plain PyTorch loop, interleaved in one process.

The plain loop is what a user would otherwise run::

    optimizer.zero_grad(); losses = closure(); losses.mean().backward(); optimizer.step()

Blocks of ``--steps`` steps of the plain loop and of each method alternate (plain, method,
plain, method, ...) after a warm-up; the ratio of each method block's process CPU time to
the mean of its two neighbouring plain blocks is one sample; the median and the
interquartile range of the samples are reported. One torch thread (stable on a shared
machine). Models: a SegNet-like conv encoder-decoder (batch 8, 3 dense tasks) and an MLP
(width 512) with ``m`` = 3 and 40 regression tasks.

    python benchmarks/step_overhead.py --methods ls marigold --out benchmarks/results/overhead
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from bilevel_mtl import BalancedOptimizer, build_balancer

Closure = Callable[[], Tensor]


class ConvNet(nn.Module):
    """A SegNet-like encoder-decoder with ``m`` one-channel dense heads."""

    def __init__(self, num_tasks: int, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.Conv2d(width, num_tasks, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.decoder(self.encoder(x)))
        return out


def problem(kind: str, num_tasks: int, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, Closure]:
    """A model, its Adam optimizer and a closure giving the ``m`` task losses on a fixed batch."""
    torch.manual_seed(seed)
    model: nn.Module
    if kind == "conv":
        model = ConvNet(num_tasks)
        x, y = torch.randn(8, 3, 32, 40), torch.randn(8, num_tasks, 32, 40)
        dims: tuple[int, ...] = (0, 2, 3)
    else:
        model = nn.Sequential(
            nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_tasks)
        )
        x, y = torch.randn(64, 64), torch.randn(64, num_tasks)
        dims = (0,)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def closure() -> Tensor:
        losses: Tensor = ((model(x) - y) ** 2).mean(dim=dims)
        return losses

    return model, optimizer, closure


def plain_steps(optimizer: torch.optim.Optimizer, closure: Closure, steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(closure().mean())
        optimizer.step()
    return time.process_time() - start


def trainer_steps(trainer: BalancedOptimizer, closure: Closure, steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        trainer.step(closure)
    return time.process_time() - start


def measure(kind: str, num_tasks: int, method: str, steps: int, blocks: int) -> dict[str, float]:
    """Median and quartiles of (method block time) / (mean of the neighbouring plain blocks)."""
    model, optimizer, closure = problem(kind, num_tasks)
    _, plain_optimizer, plain_closure = problem(kind, num_tasks)
    trainer = BalancedOptimizer(model, optimizer, build_balancer(method, num_tasks))
    plain_steps(plain_optimizer, plain_closure, steps)  # warm-up
    trainer_steps(trainer, closure, steps)
    plain = [plain_steps(plain_optimizer, plain_closure, steps)]
    ratios = []
    for _ in range(blocks):
        ours = trainer_steps(trainer, closure, steps)
        plain.append(plain_steps(plain_optimizer, plain_closure, steps))
        ratios.append(ours / ((plain[-1] + plain[-2]) / 2))
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "plain_ms_per_step": 1e3 * statistics.median(plain) / steps,
        "blocks": blocks,
        "steps_per_block": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=["ls"])
    parser.add_argument("--models", nargs="+", default=["conv", "mlp"], choices=["conv", "mlp"])
    parser.add_argument("--tasks", nargs="+", type=int, default=[3, 40])
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--blocks", type=int, default=15, help="method blocks (plain blocks: one more)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for results.json (default: print only)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind in args.models:
        for m in args.tasks:
            for method in args.methods:
                result = measure(kind, m, method, args.steps, args.blocks)
                rows.append({"model": kind, "tasks": m, "method": method, **result})
                print(
                    f"{kind:5s} m={m:3d} {method:18s} ×plain {result['median']:.3f} "
                    f"(IQR {result['q1']:.3f}–{result['q3']:.3f}; "
                    f"plain {result['plain_ms_per_step']:.1f} ms/step)",
                    flush=True,
                )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        provenance = {
            "command": "python benchmarks/step_overhead.py "
            + " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items()
                if v is not None
            ),
            "commit": commit,
            "device": f"CPU {platform.processor() or platform.machine()}, 1 torch thread, process CPU time",
            "torch": torch.__version__,
        }
        (args.out / "results.json").write_text(json.dumps({**provenance, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
