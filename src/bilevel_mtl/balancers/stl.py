"""Single-task learning: the Δm% baseline trains one chosen task."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Balancer


class STL(Balancer):
    r"""Single-task learning: weight 1 on task ``task``, 0 on the others (:math:`w=e_k`).

    The single-task regime of the Δm% baseline (Maninis et al. 2019; Nash-MTL's ``STL``):
    train one model per task, each with its own ``STL(m, task=k)``, on the same closure.
    The other losses are still computed (and reported) but do not move the parameters.
    Weights are on the simplex and ignore the losses (any scaling leaves them unchanged).
    """

    def __init__(self, num_tasks: int, task: int) -> None:
        super().__init__(num_tasks)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < num_tasks:
            raise ValueError(f"task must be an integer in [0, {num_tasks - 1}], got {task!r}")
        self.task = task

    def weights(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        weights = torch.zeros_like(losses.detach())
        weights[self.task] = 1.0
        return weights
