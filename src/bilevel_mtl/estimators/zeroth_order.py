"""The zeroth-order (derivative-free) family: random directions, perturbations, and the shared base."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import check_choice, check_integer, check_positive
from .base import Estimate, Estimator, UpperObjective

DIRECTIONS = ("sphere", "tangent")
SPACES = ("weights", "logits", "log-weights")


def sample_directions(num: int, dim: int, kind: str, generator: torch.Generator, like: Tensor) -> Tensor:
    r"""``num`` unit directions in :math:`\mathbb{R}^{dim}`, shape ``[num, dim]``.

    ``"sphere"``: uniform on the unit sphere :math:`S^{m-1}`. ``"tangent"``: uniform
    on the unit sphere of the simplex's tangent space :math:`\{v: \sum_i v_i = 0\}`
    (an isotropic Gaussian projected on that subspace, then normalised).
    Drawn on the CPU from ``generator`` (reproducible on any device), then moved.
    """
    check_choice("directions", kind, DIRECTIONS)
    z: Tensor = torch.randn(num, dim, generator=generator, dtype=torch.float64)
    if kind == "tangent":
        z = z - z.mean(dim=1, keepdim=True)
    z = z / z.norm(dim=1, keepdim=True)
    return z.to(like)


def project_tangent(vectors: Tensor) -> Tensor:
    r"""Orthogonal projection on :math:`\{\sum_i v_i = 0\}` along the last dimension."""
    return vectors - vectors.mean(dim=-1, keepdim=True)


class ZerothOrder(Estimator):
    r"""Shared machinery of the zeroth-order estimators.

    Every member estimates :math:`\nabla\Phi(\lambda)` from values of Φ at points
    :math:`\lambda` moved by a radius ``r`` along random unit directions ``u``:

    * ``directions="sphere"``: ``u`` uniform on the unit sphere of :math:`\mathbb{R}^m`
      (dimension factor ``n = m``, :math:`\mathbb{E}[uu^\top] = I/m`);
    * ``directions="tangent"``: ``u`` uniform on the unit sphere of the simplex tangent
      space :math:`T=\{v:\sum_i v_i=0\}` (``n = m - 1``, :math:`\mathbb{E}[uu^\top]=P/(m-1)`,
      :math:`P = I - \mathbf{1}\mathbf{1}^\top/m`). It estimates :math:`P\nabla\Phi`, which
      is all a simplex parametrization uses: for any λ(u) on the simplex,
      :math:`(\partial\lambda/\partial u)^\top\mathbf 1 = 0`, so the component along
      :math:`\mathbf 1` never reaches the upper variables (it is pure noise there).

    Where the perturbation is made (``space``):

    * ``"weights"`` (the paper): :math:`\lambda + r u`;
    * ``"logits"``: the softmax logits, :math:`\mathrm{softmax}(\log\lambda + r u)` (stays on the
      simplex; a multiplicative perturbation :math:`\lambda_i e^{ru_i}` renormalised). The
      estimate :math:`\hat g_z` of :math:`\nabla_z\Phi(\mathrm{softmax}(z))` is returned as the
      weights-space vector :math:`y = P\hat g_z \oslash \lambda`, chosen so that its pull-back
      through the softmax is the logits estimate, :math:`(\mathrm{diag}\lambda-\lambda\lambda^\top)
      y = P\hat g_z`; in expectation :math:`y = \nabla\Phi - (\lambda^\top\nabla\Phi)\mathbf 1`,
      i.e. the weights gradient up to a multiple of :math:`\mathbf 1` that no simplex
      parametrization sees. A balancer that chains the estimate through its
      parametrization (:class:`~bilevel_mtl.Marigold`) therefore needs no change. Simplex
      weights only;
    * ``"log-weights"``: :math:`\lambda \odot e^{ru}` (positive, off-simplex weights such as
      :class:`~bilevel_mtl.parametrizations.PositiveWeights`); the estimate :math:`\hat g_s` of
      :math:`\nabla_s\Phi(e^s)` is returned as :math:`\hat g_s \oslash \lambda`, which chains
      exactly through :math:`\omega = e^s`.

    All evaluations of one estimate share the step's batch and dropout masks (common
    random numbers: :meth:`bilevel_mtl.context.StepContext.losses_at` replays the random state
    of the step's own forward pass), so differences of Φ measure the perturbation only.

    A subclass says at which points Φ is evaluated (:meth:`points`) and how the
    values weigh each direction (:meth:`coefficients`); the rest (sampling, the
    perturbation space, averaging) lives here. The pieces are public so a balancer
    can take the real step at a perturbed point and combine later
    (:class:`~bilevel_mtl.Marigold`), and so tests can draw many samples at once.
    """

    evaluations_per_direction: ClassVar[int]
    """Evaluations of Φ per direction (plus :attr:`shared_evaluations` per estimate)."""
    shared_evaluations: ClassVar[int] = 0
    """Evaluations of Φ per estimate that all directions share (e.g. Φ(λ))."""

    def __init__(
        self,
        radius: float = 1e-3,
        directions: str = "sphere",
        num_directions: int = 1,
        space: str = "weights",
    ) -> None:
        self.radius = check_positive("radius", radius)
        self.directions = check_choice("directions", directions, DIRECTIONS)
        self.space = check_choice("space", space, SPACES)
        num_directions = check_integer("num_directions", num_directions)
        self.num_directions = num_directions

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(radius={self.radius}, directions={self.directions!r}, "
            f"num_directions={self.num_directions}, space={self.space!r})"
        )

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

    def perturb(self, weights: Tensor, offsets: Tensor) -> Tensor:
        """The weights moved by ``offsets`` (rows ``t·u``) in the perturbation space, ``[p, m]``."""
        if self.space == "weights":
            return weights + offsets
        self._check_positive(weights)
        moved = weights.log() + offsets
        return torch.softmax(moved, dim=-1) if self.space == "logits" else moved.exp()

    @abstractmethod
    def points(self, weights: Tensor, directions: Tensor) -> Tensor:
        """The weights at which Φ is evaluated for these directions, shape ``[p, m]``."""

    @abstractmethod
    def coefficients(self, values: Tensor, directions: Tensor) -> Tensor:
        """Per-direction scalars ``c_k`` of the estimate :math:`c_k u_k` (``values`` as in :meth:`points`)."""

    def samples(self, directions: Tensor, values: Tensor, weights: Tensor | None = None) -> Tensor:
        """One weights-space estimate per direction, shape ``[k, m]`` (``weights`` for the log spaces)."""
        expected = directions.shape[0] * self.evaluations_per_direction + self.shared_evaluations
        if values.numel() != expected:
            raise ValueError(
                f"{type(self).__name__} needs {expected} values of Φ for {directions.shape[0]} "
                f"direction(s) (in the order of points()), got {values.numel()}"
            )
        coef = self.coefficients(values.to(directions).reshape(-1), directions)
        estimates = coef[:, None] * directions
        if self.space == "weights":
            return estimates
        if weights is None:
            raise ValueError(f"space={self.space!r} needs the unperturbed weights to map the estimate back")
        self._check_positive(weights)
        if self.space == "logits":
            estimates = project_tangent(estimates)
        return estimates / weights.to(estimates)

    def combine(self, directions: Tensor, values: Tensor, weights: Tensor | None = None) -> Tensor:
        """The estimate: the mean of :meth:`samples` over the directions, shape ``[m]``."""
        return self.samples(directions, values, weights).mean(dim=0)

    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Estimate:
        directions = self.sample(weights, generator)
        values = objective.evaluate(self.points(weights, directions))
        return Estimate(self.combine(directions, values.detach(), weights), list(values.unbind(0)))

    def _scale(self, num_tasks: int) -> float:
        return self.dimension(num_tasks) / self.radius

    def _check_positive(self, weights: Tensor) -> None:
        if not bool((weights > 0).all()):
            raise ValueError(
                f"space={self.space!r} perturbs log-weights and needs weights > 0, got "
                f"{weights.detach().tolist()}"
            )
