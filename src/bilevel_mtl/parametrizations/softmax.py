"""Softmax parametrizations of simplex weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive
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
    :math:`\lambda_i = \mathrm{softmax}(\beta\, u_i / \tilde f_i)`.

    Dividing by the current loss :math:`f_i` makes the sensitivity
    :math:`\partial\lambda/\partial u` larger for tasks with small losses and
    removes the dependence on each task's loss scale. ``u`` starts at 0, so the
    first weights are uniform whatever the losses. Losses must be non-negative.

    The division is made safe by a floor relative to the other losses (the paper does not
    say what happens at :math:`f_i \to 0`, where the weights become one-hot as soon as
    :math:`u \ne 0`): :math:`\tilde f_i = \max(f_i,\ \rho\max_j f_j,\ \epsilon)` with
    ``min_loss_ratio`` :math:`\rho` (1e-3) and ``min_loss`` :math:`\epsilon` (1e-8, for
    all-zero losses). A task whose loss is a thousandth of the largest or less is then
    as sensitive as one at a thousandth, so a near-zero loss cannot take all the weight.
    ``min_loss_ratio=0`` divides by the raw losses as the paper writes it.
    """

    def __init__(
        self, num_tasks: int, beta: float = 1.0, min_loss: float = 1e-8, min_loss_ratio: float = 1e-3
    ) -> None:
        super().__init__(num_tasks)
        self.beta = check_positive("beta", beta)
        self.min_loss = check_positive("min_loss", min_loss)
        self.min_loss_ratio = check_nonnegative("min_loss_ratio", min_loss_ratio)
        if self.min_loss_ratio >= 1:
            raise ValueError(f"min_loss_ratio must be < 1, got {min_loss_ratio!r}")
        self.logits = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        if bool((losses < 0).any()):
            raise ValueError(
                "ScaledSoftmax divides by the losses, which must be >= 0; got "
                f"{losses.detach().tolist()}. Use Softmax for losses that can be negative."
            )
        floor = (self.min_loss_ratio * losses.detach().max()).clamp(min=self.min_loss)
        return torch.softmax(self.beta * self.logits.to(losses) / torch.maximum(losses, floor), dim=0)
