"""Resume every checkpoint of a file in this (new) process: ``python reliability_resume.py IN OUT STEPS``.

Writes ``{name: {"resumed": trajectory, "fresh_balancer": trajectory}}``; the second is
the control run that restores the model and optimizer but not the balancer.
"""

from __future__ import annotations

import sys

import torch
from reliability_cases import train


def main(source: str, target: str, steps: int) -> None:
    torch.set_num_threads(1)
    checkpoints = torch.load(source, weights_only=False)
    results = {
        name: {
            "resumed": train(name, steps, start=checkpoint),
            "fresh_balancer": train(name, steps, start=checkpoint, restore_balancer=False),
        }
        for name, checkpoint in checkpoints.items()
    }
    torch.save(results, target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
