"""The single-point zeroth-order estimator of MARIGOLD."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from .zeroth_order import ZerothOrder


class SinglePoint(ZerothOrder):
    r"""Single-point estimator of the MARIGOLD paper (Chen et al. 2026, Algorithm 1):

    .. math:: \hat g = \frac{n}{r}\, \Phi(\lambda + r u)\, u,

    ``u`` uniform on the unit sphere of dimension ``n = m`` (``directions="sphere"``,
    the paper) or of the simplex tangent space, ``n = m - 1`` (``"tangent"``).
    Unbiased for the gradient of the smoothed objective
    :math:`\mathbb{E}_{v \in B}\,\Phi(\lambda + r v)`. On a quadratic Φ (sphere,
    :math:`a=\nabla\Phi`, :math:`\Phi_0=\Phi(\lambda)`,
    :math:`q=((\mathrm{tr}H)^2+2\,\mathrm{tr}H^2)/(m(m+2))`) its total variance is
    :math:`(m/r)^2[\Phi_0^2 + r^2|a|^2/m + r^2\Phi_0\,\mathrm{tr}H/m + r^4q/4] - |a|^2`:
    dominated by :math:`(m\Phi_0/r)^2`. ``num_directions`` averages independent draws.
    See :class:`ZerothOrder` for ``directions`` and ``space``.

    Cost per estimate (``k = num_directions``): ``k`` evaluations of Φ, each one
    backward on the step's retained graph (the perturbed weighted gradient), one
    look-ahead and one forward without graph; extra memory: one parameter copy
    and the optimizer-state copies of the look-ahead.
    """

    evaluations_per_direction: ClassVar[int] = 1

    name = "single_point"
    reference = "Chen et al. 2026, Algorithm 1"
    summary = "(n/r) Φ(λ+ru) u: one look-ahead (1 backward + 1 forward) per direction"

    def points(self, weights: Tensor, directions: Tensor) -> Tensor:
        return self.perturb(weights, self.radius * directions)

    def coefficients(self, values: Tensor, directions: Tensor) -> Tensor:
        return self._scale(directions.shape[1]) * values
