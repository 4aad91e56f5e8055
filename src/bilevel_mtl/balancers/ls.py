"""Linear scalarization."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import LossBalancer


class LS(LossBalancer):
    r"""Linear scalarization: the update of :math:`\frac{1}{m}\sum_i f_i` (equal weights 1/m)."""

    name = "ls"
    reference = "linear scalarization"
    summary = "equal weights 1/m"
    simplex = True
    scale_invariance = "weights"

    def _weights(self, losses: Tensor) -> Tensor:
        return torch.full_like(losses, 1.0 / self.num_tasks)
