"""The log-decrement criterion: FAMO's upper objective, measured after the user's step."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .._checks import check_num_tasks, check_positive
from .base import Criterion


def log_decrements(losses_before: Tensor, losses_after: Tensor, min_loss: float) -> Tensor:
    r""":math:`\delta_i = \log\tilde f_i(\theta) - \log\tilde f_i(A)`, :math:`\tilde f = \max(f, \epsilon)`:
    how much each task's loss fell, in log units (free of each task's loss scale)."""
    return losses_before.clamp(min=min_loss).log() - losses_after.clamp(min=min_loss).log()


class LogDecrement(Criterion):
    r"""Half the weighted log-decrement of the step,
    :math:`R(\lambda) = \tfrac12\sum_i \lambda_i\,\delta_i(\lambda)`, with
    :math:`\delta_i(\lambda) = \log f_i(\theta) - \log f_i(A(\lambda, \theta))` and
    :math:`\lambda` the weights on the *log*-losses of the step (``objective="log-losses"``
    of :class:`~bilevel_mtl.balancers.Marigold`). For a step
    :math:`A = \theta - \alpha P\sum_j\lambda_j\nabla\log f_j` to first order,
    :math:`\delta = \alpha K\lambda` with :math:`K = G P G^\top` the Gramian of the log-loss
    gradients in the optimizer's geometry, so :math:`R = \tfrac{\alpha}{2}\lambda^\top K\lambda`
    (the dual of maximising the smallest log-decrement, as in MGDA) and its gradient is the
    measured vector itself, :math:`\nabla_\lambda R = \delta` (:meth:`first_order_gradient`,
    what :class:`~bilevel_mtl.estimators.FirstOrder` returns). Descending it moves weight
    to the tasks whose loss fell least. This is FAMO's update of its logits (Liu et al.
    2023, eq. 8), written as a MARIGOLD criterion. Every quantity is a log, so multiplying a
    task's loss by a constant changes nothing. ``min_loss``: the floor
    :math:`\tilde f_i = \max(f_i, \epsilon)` that keeps an exactly zero loss finite.
    """

    depends_on_weights: ClassVar[bool] = True
    has_first_order_gradient: ClassVar[bool] = True

    def __init__(self, num_tasks: int, min_loss: float = 1e-12) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)
        self.min_loss = check_positive("min_loss", min_loss)

    def _decrements(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        if bool((losses_before < 0).any()) or bool((losses_after < 0).any()):
            raise ValueError(
                "LogDecrement takes the log of the losses, which must be >= 0; got "
                f"{losses_before.detach().tolist()} before and {losses_after.detach().tolist()} after"
            )
        return log_decrements(losses_before, losses_after, self.min_loss)

    def forward(self, losses_before: Tensor, losses_after: Tensor, weights: Tensor | None = None) -> Tensor:
        if weights is None:
            raise TypeError("LogDecrement depends on the weights of the step: pass weights=")
        return 0.5 * torch.dot(weights.to(losses_after), self._decrements(losses_before, losses_after))

    def first_order_gradient(self, losses_before: Tensor, losses_after: Tensor, weights: Tensor) -> Tensor:
        r""":math:`\nabla_\lambda R = \delta` to first order in the step (see the class docstring)."""
        del weights
        return self._decrements(losses_before, losses_after)
