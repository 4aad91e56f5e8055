"""Linear scalarization."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Balancer


class LS(Balancer):
    r"""Linear scalarization: the update of :math:`\frac{1}{m}\sum_i f_i` (equal weights 1/m)."""

    def weights(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        return torch.full_like(losses.detach(), 1.0 / self.num_tasks)
