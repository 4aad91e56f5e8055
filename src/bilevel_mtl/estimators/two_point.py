"""The two-point (antithetic) zeroth-order estimator."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .zeroth_order import ZerothOrder


class TwoPoint(ZerothOrder):
    r"""Two-point (antithetic, central-difference) estimator:

    .. math:: \hat g = \frac{n}{2r}\,\big(\Phi(\lambda + r u) - \Phi(\lambda - r u)\big)\, u,

    the symmetric finite difference along a random direction (Nesterov & Spokoiny 2017,
    "Random gradient-free minimization of convex functions"; Duchi et al. 2015).
    The constant Φ(λ) cancels, so unlike :class:`SinglePoint` its variance does not
    carry :math:`(n\Phi/r)^2`: on a quadratic Φ it is unbiased with total variance
    :math:`(n-1)|a|^2` (``a`` the (projected) gradient), independent of ``r``; the
    bias on a smooth Φ is :math:`O(r^2)`. Both evaluations use the same batch and
    dropout masks (common random numbers), which is what makes the difference small.

    Cost per estimate (``k = num_directions``): ``2k`` evaluations of Φ, each one
    backward on the step's retained graph, one look-ahead and one forward without
    graph; extra memory: one parameter copy and the look-ahead's optimizer-state copies.
    """

    evaluations_per_direction: ClassVar[int] = 2

    name = "two_point"
    reference = "antithetic zeroth-order estimator (Nesterov & Spokoiny 2017)"
    summary = "(n/2r)(Φ(λ+ru) − Φ(λ−ru)) u: two look-aheads per direction, same batch and dropout masks"

    def points(self, weights: Tensor, directions: Tensor) -> Tensor:
        offsets = self.radius * directions
        return self.perturb(weights, torch.cat([offsets, -offsets]))

    def coefficients(self, values: Tensor, directions: Tensor) -> Tensor:
        plus, minus = values.reshape(2, directions.shape[0]).unbind()
        difference: Tensor = plus - minus
        return (self._scale(directions.shape[1]) / 2) * difference
