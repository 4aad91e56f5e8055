"""The first-order hypergradient: the criterion's gradient read off one measured step."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Estimate, Estimator, UpperObjective


class FirstOrder(Estimator):
    r"""The hypergradient a criterion gives in closed form from one step taken with the weights
    themselves: :math:`\hat g = \nabla_\lambda R` evaluated at the measured losses after the
    step (:meth:`~bilevel_mtl.criteria.Criterion.first_order_gradient`).

    For :class:`~bilevel_mtl.criteria.LogDecrement`, :math:`\hat g = \delta`, the per-task
    log-decrement of the step, exact to first order in the step (:math:`\delta = \alpha K\lambda`).
    No perturbation and no direction: all ``m`` measured decrements enter the estimate, where a
    zeroth-order estimate keeps one number. Deterministic; one evaluation of the step (one
    backward and one forward inside :class:`~bilevel_mtl.balancers.MarigoldFaithful`; the real
    step's own losses inside :class:`~bilevel_mtl.balancers.Marigold`).
    """

    name = "first_order"
    reference = "FAMO's measured log-decrement (Liu et al. 2023), as a MARIGOLD estimator"
    summary = "the criterion's closed-form gradient from the losses measured after one step"

    def __repr__(self) -> str:
        return "FirstOrder()"

    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Estimate:
        del generator
        with torch.no_grad():
            after = objective.losses_after(weights).detach()
        gradient = objective.criterion.first_order_gradient(objective.losses_before, after, weights.detach())
        return Estimate(gradient.detach().to(weights), [objective.value(after, weights)])
