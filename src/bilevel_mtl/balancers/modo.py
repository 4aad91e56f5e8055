"""MoDo: stochastic MGDA with double sampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive
from ._simplex import check_jacobian, project_simplex
from .gradient import Combination, GradientBalancer


def modo_update(
    weights: Tensor, first: Tensor, second: Tensor, gamma: float = 1e-3, rho: float = 0.1
) -> Tensor:
    r"""MoDo's weight step:

    .. math:: \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma\,(G_1G_2^\top\lambda + \rho\lambda)\big) .

    :math:`G_1, G_2` are task gradients on two independent batches, so
    :math:`G_1G_2^\top\lambda` is an unbiased estimate of the gradient of
    :math:`\frac12\|G^\top\lambda\|^2`.
    """
    check_jacobian(first, "first", rows=weights.numel())
    check_jacobian(second, "second", rows=weights.numel())
    if first.shape != second.shape:
        raise ValueError(
            f"the two gradient samples differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}"
        )
    lam = weights.to(torch.float64)
    step = (first @ (second.mT @ weights.to(second))).to(torch.float64) + rho * lam
    return project_simplex(lam - gamma * step).to(weights)


class MoDo(GradientBalancer):
    r"""MoDo (Chen et al. 2023, "Three-Way Trade-Off in Multi-Objective Learning: Optimization,
    Generalization and Conflict-Avoidance", Algorithm 1).

    .. math:: \lambda_{t+1} = \Pi_\Delta\big(\lambda_t - \gamma\,(G_{t,1}G_{t,2}^\top + \rho I)\lambda_t\big),
              \qquad \theta_{t+1} = \theta_t - \eta\, G_{t,3}^\top\lambda_{t+1}

    where :math:`G_{t,1}, G_{t,2}, G_{t,3}` are the task gradients on three independent
    batches. **The closure returns a** ``[3, m]`` **tensor**: rows 0 and 1 update λ, row 2
    gives the update (LibMTL's order). Parameters outside ``shared`` get the gradient of
    :math:`\lambda^\top \bar f` with :math:`\bar f` the mean of the three rows. Defaults
    γ = 1e-3, ρ = 0.1 (LibMTL's, taken from the authors' code; ρ = 0 is the plain step).
    λ (on the simplex) is state and starts uniform. No scale invariance: the λ step
    grows with the gradients' scale.
    """

    supports_representation = False
    lam: Tensor

    name = "modo"
    reference = "Chen et al. 2023 (NeurIPS)"
    summary = "stochastic MGDA with double sampling"
    num_batches = 3
    simplex = True
    stateful = True

    def __init__(
        self, num_tasks: int, *, gamma: float = 1e-3, rho: float = 0.1, shared: nn.Module | None = None
    ) -> None:
        super().__init__(num_tasks, shared=shared)
        gamma = check_positive("gamma", gamma)
        rho = check_nonnegative("rho", rho)
        self.gamma, self.rho = float(gamma), float(rho)
        self.register_buffer("lam", torch.full((num_tasks,), 1.0 / num_tasks))

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        lam = modo_update(self.lam.to(jacobian), jacobian[0], jacobian[1], self.gamma, self.rho)
        return Combination(lam, lam @ jacobian[2], state={"lam": lam})
