"""The forward-difference zeroth-order estimator."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .zeroth_order import ZerothOrder


class ForwardDifference(ZerothOrder):
    r"""Forward-difference estimator with the unperturbed value as baseline:

    .. math:: \hat g = \frac{n}{r}\,\big(\Phi(\lambda + r u) - \Phi(\lambda)\big)\, u

    (Flaxman et al. 2005; Nesterov & Spokoiny 2017). Subtracting Φ(λ) removes the
    single-point estimator's :math:`(n\Phi/r)^2` term; on a quadratic Φ it is unbiased
    with total variance :math:`(n-1)|a|^2 + n^2r^2q/4` (DESIGN §5). Φ(λ) is evaluated
    once per estimate and shared by all directions, so with ``k`` directions it costs
    ``k + 1`` evaluations against :class:`TwoPoint`'s ``2k``.

    Cost per estimate (``k = num_directions``): ``k + 1`` evaluations of Φ, each one
    backward on the step's retained graph, one look-ahead and one forward without
    graph; extra memory: one parameter copy and the look-ahead's optimizer-state copies.
    """

    evaluations_per_direction: ClassVar[int] = 1
    shared_evaluations: ClassVar[int] = 1

    name = "forward_difference"
    reference = "forward-difference zeroth-order estimator (Nesterov & Spokoiny 2017)"
    summary = "(n/r)(Φ(λ+ru) − Φ(λ)) u: 1 + num_directions look-aheads"

    def points(self, weights: Tensor, directions: Tensor) -> Tensor:
        zero = torch.zeros_like(directions[:1])
        return self.perturb(weights, torch.cat([zero, self.radius * directions]))

    def coefficients(self, values: Tensor, directions: Tensor) -> Tensor:
        return self._scale(directions.shape[1]) * (values[1:] - values[0])
