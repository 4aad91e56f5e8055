"""Quality and cost of MARIGOLD's modes against LS on the demo problem.

Usage: python benchmarks/marigold_modes.py [--steps N] [--seeds 0 1 2] [--upper-lrs 1e-4 1e-3]
Writes benchmarks/results/marigold_modes/results.json (with command, commit and device).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from bilevel_mtl.demo import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--upper-lrs", type=float, nargs="+", default=[1e-4, 1e-3])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "marigold_modes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = []
    for upper_lr in args.upper_lrs:
        for seed in args.seeds:
            results = train(args.steps, 128, upper_lr, seed, progress=True)
            for method, numbers in results.items():
                records.append({"method": method, "upper_lr": upper_lr, "seed": seed, **asdict(numbers)})
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "device": f"CPU {platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "torch": torch.__version__,
        "steps": args.steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
