"""Single-task learning: the Δm% baseline trains one chosen task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor

from .base import LossBalancer


class STL(LossBalancer):
    r"""Single-task learning: weight 1 on task ``task``, 0 on the others (:math:`w=e_k`).

    The single-task regime of the Δm% baseline (Maninis et al. 2019; Nash-MTL's ``STL``):
    train one model per task, each with its own ``STL(m, task=k)``, on the same closure.
    The other losses are still computed (and reported) but do not move the parameters.
    Weights are on the simplex and ignore the losses (any scaling leaves them unchanged).
    """

    name = "stl"
    reference = "Maninis et al. 2019 (CVPR); Δm% baseline"
    summary = "one chosen task, weight 1"
    simplex = True
    scale_invariance = "weights"
    permutation_equivariant = False
    requires: ClassVar[Mapping[str, str]] = {"task": "the index of the task to train"}

    def __init__(self, num_tasks: int, task: int) -> None:
        super().__init__(num_tasks)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < num_tasks:
            raise ValueError(f"task must be an integer in [0, {num_tasks - 1}], got {task!r}")
        self.task = task

    def _weights(self, losses: Tensor) -> Tensor:
        weights = torch.zeros_like(losses)
        weights[self.task] = 1.0
        return weights
