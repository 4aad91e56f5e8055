"""The worst-case decrement of MARIGOLD (Chen et al. 2026, eq. 7–11)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice, check_num_tasks
from ..parametrizations import ScaledSoftmax
from .base import Criterion


class WorstCaseDecrement(Criterion):
    r"""Worst-case decrement :math:`\max_{\rho\in\Delta}\sum_i \rho_i(f_i(A(\lambda,\theta)) - f_i(\theta))`.

    Minimising it over λ asks the look-ahead step to decrease every task's loss,
    the worst one first (an MGDA-like goal, measured after the user's own
    optimizer step). ``adversary="learned"`` (the paper) keeps ρ as a trainable
    adversary, :math:`\rho_i=\mathrm{softmax}(\beta v_i / f_i(\theta))`, updated by
    gradient *ascent* alongside λ; ``adversary="max"`` takes the exact inner max,
    :math:`\max_i (f_i(A) - f_i(\theta))` (non-smooth at ties).

    ``relative=True`` measures each task's change relative to its loss,
    :math:`(f_i(A) - f_i(\theta)) / f_i(\theta)`, which makes the decrements comparable
    across tasks whatever their loss scales (the paper's absolute decrement favours the tasks
    with the largest losses once the hypergradient is estimated accurately; see
    ``docs/marigold.md``). Losses must then be positive. ``min_loss_ratio``: ρ's loss floor
    (see :class:`~bilevel_mtl.parametrizations.ScaledSoftmax`).
    """

    maximize_parameters = True

    def __init__(
        self,
        num_tasks: int,
        beta: float = 1.0,
        adversary: str = "learned",
        relative: bool = False,
        min_loss_ratio: float = 1e-3,
    ) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)
        self.relative = bool(relative)
        self.adversary = check_choice("adversary", adversary, ("learned", "max"))
        learned = adversary == "learned"
        self.rho = ScaledSoftmax(num_tasks, beta, min_loss_ratio=min_loss_ratio) if learned else None

    def forward(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        decrement = losses_after - losses_before
        if self.relative:
            if bool((losses_before <= 0).any()):
                raise ValueError(
                    "WorstCaseDecrement(relative=True) divides by the losses before the step, which "
                    f"must be > 0; got {losses_before.detach().tolist()}"
                )
            decrement = decrement / losses_before.detach()
        if self.rho is None:
            return decrement.max()
        return torch.dot(self.rho(losses_before.detach()), decrement)
