"""Zeroth-order (derivative-free) hypergradient estimators."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from .base import Estimator, UpperObjective

DIRECTIONS = ("sphere", "tangent")


def sample_directions(num: int, dim: int, kind: str, generator: torch.Generator, like: Tensor) -> Tensor:
    r"""``num`` unit directions in :math:`\mathbb{R}^{dim}`, shape ``[num, dim]``.

    ``"sphere"``: uniform on the unit sphere :math:`S^{m-1}`. ``"tangent"``: uniform
    on the unit sphere of the simplex's tangent space :math:`\{v: \sum_i v_i = 0\}`
    (an isotropic Gaussian projected on that subspace, then normalised).
    Drawn on the CPU from ``generator`` (reproducible on any device), then moved.
    """
    z: Tensor = torch.randn(num, dim, generator=generator, dtype=torch.float64)
    if kind == "tangent":
        z = z - z.mean(dim=1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True)
    return z.to(like)


class SinglePoint(Estimator):
    r"""Single-point estimator of the MARIGOLD paper (Chen et al. 2026, Algorithm 1):

    .. math:: \hat g = \frac{n}{r}\, \Phi(\lambda + r u)\, u,

    ``u`` uniform on the unit sphere of dimension ``n = m`` (``directions="sphere"``,
    the paper) or of the simplex tangent space, ``n = m - 1`` (``"tangent"``; it
    estimates the gradient projected on :math:`\{\sum v = 0\}`, the only directions
    in which simplex weights can move). Unbiased for the gradient of the smoothed
    objective :math:`\mathbb{E}_{v \in B}\,\Phi(\lambda + r v)`; its variance grows like
    :math:`(n \Phi/r)^2`. ``num_directions`` averages independent draws.

    Cost per estimate: ``num_directions`` look-ahead steps, each one backward
    (the perturbed weighted gradient) and one forward (losses after); no extra
    memory beyond one parameter copy.
    """

    def __init__(self, radius: float = 1e-3, directions: str = "sphere", num_directions: int = 1) -> None:
        self.radius = check_positive("radius", radius)
        self.directions = check_choice("directions", directions, DIRECTIONS)
        if num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {num_directions}")
        self.num_directions = int(num_directions)

    def dimension(self, num_tasks: int) -> int:
        """The dimension factor ``n`` of the directions' sphere."""
        if self.directions == "tangent" and num_tasks < 2:
            raise ValueError("tangent directions need at least 2 tasks")
        return num_tasks - 1 if self.directions == "tangent" else num_tasks

    def sample(self, weights: Tensor, generator: torch.Generator) -> Tensor:
        """Directions ``u`` of shape ``[num_directions, m]``."""
        m = weights.numel()
        self.dimension(m)
        return sample_directions(self.num_directions, m, self.directions, generator, weights)

    def combine(self, directions: Tensor, values: Tensor) -> Tensor:
        r"""Average of :math:`(n/r)\,\Phi(\lambda + r u_k)\, u_k` over the directions."""
        n = self.dimension(directions.shape[1])
        return (n / self.radius) * (values.to(directions)[:, None] * directions).mean(dim=0)

    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Tensor:
        directions = self.sample(weights, generator)
        values = torch.stack([objective(weights + self.radius * u) for u in directions])
        return self.combine(directions, values)
