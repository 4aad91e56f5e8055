"""Softmax parametrizations of simplex weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive
from .base import Parametrization


class Softmax(Parametrization):
    r"""Plain softmax: :math:`\lambda = \mathrm{softmax}(u)`, ``u`` initialised to 0 (uniform)."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.logits = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        return torch.softmax(self.logits.to(losses), dim=0)


class ScaledSoftmax(Parametrization):
    r"""The MARIGOLD parametrization (Chen et al. 2026, Appendix C):
    :math:`\lambda_i = \mathrm{softmax}(\beta\, u_i / f_i)`.

    Dividing by the current loss :math:`f_i` makes the sensitivity
    :math:`\partial\lambda/\partial u` larger for tasks with small losses and
    removes the dependence on each task's loss scale. ``u`` starts at 0, so the
    first weights are uniform whatever the losses. Losses must be non-negative;
    those below ``min_loss`` (a batch with nothing to learn for a masked task, say)
    count as ``min_loss``.
    """

    def __init__(self, num_tasks: int, beta: float = 1.0, min_loss: float = 1e-8) -> None:
        super().__init__(num_tasks)
        self.beta = check_positive("beta", beta)
        self.min_loss = check_positive("min_loss", min_loss)
        self.logits = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        if bool((losses < 0).any()):
            raise ValueError(
                "ScaledSoftmax divides by the losses, which must be >= 0; got "
                f"{losses.detach().tolist()}. Use Softmax for losses that can be negative."
            )
        return torch.softmax(self.beta * self.logits.to(losses) / losses.clamp(min=self.min_loss), dim=0)
