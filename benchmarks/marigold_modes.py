"""Quality and cost of MARIGOLD configurations against LS on the demo problem.

Usage: python -m benchmarks.marigold_modes [--steps N] [--seeds 0 1 2] [--upper-lrs 1e-4 1e-3]
       [--variants modes estimators] [--out DIR]
``modes`` compares the two modes with the paper's estimator; ``estimators`` compares the
faithful mode with the tangent two-point estimator, on the paper's absolute criterion and
on the relative one. Writes DIR/<variant>.json (with command, commit and device).
A study of the demo problem (:mod:`bilevel_mtl.demo`), not one of the suites of ``python -m benchmarks``.
Run it from the repository root with ``-m``: as a script, its folder would come first on
``sys.path`` and the harness's modules (``estimators``, ``datasets``, ...) would shadow others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bilevel_mtl.balancers import LS, Balancer, Marigold, MarigoldFaithful
from bilevel_mtl.criteria import WorstCaseDecrement
from bilevel_mtl.demo import train
from bilevel_mtl.estimators import TwoPoint


def variants(upper_lr: float) -> dict[str, dict[str, Callable[[], Balancer]]]:
    def relative() -> WorstCaseDecrement:
        return WorstCaseDecrement(3, relative=True)

    def two_point() -> TwoPoint:
        return TwoPoint(directions="tangent")

    return {
        "modes": {
            "LS": lambda: LS(3),
            "MARIGOLD perturbed": lambda: Marigold(3, lr=upper_lr),
            "MARIGOLD faithful": lambda: MarigoldFaithful(3, lr=upper_lr),
        },
        "estimators": {
            "LS": lambda: LS(3),
            "faithful two-point": lambda: MarigoldFaithful(3, lr=upper_lr, estimator=two_point()),
            "faithful two-point relative": lambda: MarigoldFaithful(
                3, lr=upper_lr, estimator=two_point(), criterion=relative()
            ),
            "perturbed relative": lambda: Marigold(3, lr=upper_lr, criterion=relative()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--upper-lrs", type=float, nargs="+", default=[1e-4, 1e-3])
    parser.add_argument("--variants", nargs="+", default=["modes"], choices=["modes", "estimators"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "marigold_modes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    git = ["git", "rev-parse", "--short", "HEAD"]
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip(),
        "device": f"CPU {platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "torch": torch.__version__,
        "steps": args.steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        records = []
        for upper_lr in args.upper_lrs:
            for seed in args.seeds:
                methods = variants(upper_lr)[variant]
                results = train(args.steps, 128, upper_lr, seed, progress=True, methods=methods)
                for method, numbers in results.items():
                    records.append({"method": method, "upper_lr": upper_lr, "seed": seed, **asdict(numbers)})
        path = args.out / f"{variant}.json"
        path.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
