"""Uncertainty weighting with learned log-variances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_positive
from .base import LossBalancer

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class UW(LossBalancer):
    r"""Uncertainty weighting (Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to
    Weigh Losses for Scene Geometry and Semantics", eq. 7): with learned log-variances
    :math:`s_i=\log\sigma_i^2`, minimise

    .. math:: \mathcal L(\theta, s) = \sum_i \tfrac12 e^{-s_i} f_i(\theta) + \tfrac12 s_i,
              \qquad w_i = \tfrac12 e^{-s_i},
              \qquad \partial_{s_i}\mathcal L = \tfrac12 - \tfrac12 e^{-s_i} f_i .

    The weights are the current :math:`\tfrac12 e^{-s}`; after the model's step, ``s`` takes one
    step of its own optimizer on
    ``s`` (default Adam with ``lr=0.025``, the Nash-MTL/FAMO code's ``method_params_lr``;
    the paper trains ``s`` with the model's optimizer) — do not add ``log_variances`` to
    your optimizer. ``s`` starts at 0 (weights ½). At the fixed point :math:`e^{s_i}=f_i`,
    so the weights tend to :math:`1/(2f_i)`: the update becomes invariant to per-task loss
    scales only as ``s`` converges. Weights are not on the simplex.
    """

    name = "uw"
    reference = "Kendall, Gal & Cipolla 2018 (CVPR)"
    summary = "learned log-variances"
    stateful = True

    def __init__(
        self,
        num_tasks: int,
        *,
        lr: float = 0.025,
        init: float = 0.0,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(num_tasks)
        lr = check_positive("lr", lr)
        init = check_finite("init", init)
        self.log_variances = nn.Parameter(torch.full((num_tasks,), float(init)))
        factory = optimizer or (lambda params: torch.optim.Adam(params, lr=lr))
        self.optimizer = factory([self.log_variances])

    def _weights(self, losses: Tensor) -> Tensor:
        return (0.5 * torch.exp(-self.log_variances.detach())).to(losses)

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> None:
        precision = torch.exp(-self.log_variances.detach())
        self.optimizer.zero_grad(set_to_none=True)
        self.log_variances.grad = 0.5 - 0.5 * precision * losses.to(precision)
        self.optimizer.step()

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
