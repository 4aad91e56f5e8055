"""Hypergradient estimators of ∇_λ Φ(λ), Φ(λ) = R(f(θ), f(A(λ, θ)))."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from ..context import StepContext
from ..criteria import Criterion


class UpperObjective:
    r"""The upper-level objective at the current iterate, :math:`\Phi(w) = R(f(\theta), f(A(w,\theta)))`.

    ``losses_after(w)`` returns :math:`f(A(w, \theta))` on the step's batch. Calling
    the objective evaluates Φ (no gradient to the model) and records the value,
    still attached to the criterion's own parameters, in ``evaluations``: the
    balancer turns their mean into the adversary's gradient.

    Estimators that differentiate through the step (unrolled, implicit, exact) also
    get the lower level through ``context`` (a :class:`~bilevel_mtl.context.StepContext`).
    """

    def __init__(
        self,
        criterion: Criterion,
        losses_before: Tensor,
        losses_after: Callable[[Tensor], Tensor],
        context: StepContext | None = None,
    ) -> None:
        self.criterion = criterion
        self.losses_before = losses_before.detach()
        self.losses_after = losses_after
        self.context = context
        self.num_tasks = self.losses_before.numel()
        self.evaluations: list[Tensor] = []

    @classmethod
    def lookahead(cls, criterion: Criterion, context: StepContext) -> UpperObjective:
        """Φ(w) = R(f(θ), f(A(w, θ))) for one training step, A = the user's optimizer from its warm state.

        What :class:`~bilevel_mtl.Marigold` (``mode="faithful"``) estimates; ``losses_after(w)``
        is one backward on the step's graph (the weighted gradient), the look-ahead, and
        one forward on the same batch with the same dropout masks.
        """
        lookahead = context.lookahead

        def losses_after(weights: Tensor) -> Tensor:
            return context.losses_at(lookahead.step(context.gradients(weights)).params)

        return cls(criterion, context.losses.detach(), losses_after, context)

    def __call__(self, weights: Tensor) -> Tensor:
        with torch.no_grad():
            after = self.losses_after(weights).detach()
        return self.record(after)

    def evaluate(self, points: Tensor) -> Tensor:
        """Φ at each row of ``points`` (shape ``[p, m]``), as a vector ``[p]``."""
        return torch.stack([self(w) for w in points])

    def record(self, losses_after: Tensor) -> Tensor:
        """The criterion at ``losses_after`` (treated as data), recorded in ``evaluations``.

        Returns the value detached. Estimators that compute the losses after the step
        themselves (with a graph to the weights) record them here, so the adversary
        and the reported criterion value see every estimator alike.
        """
        with torch.enable_grad():  # keep the adversary's graph
            value: Tensor = self.criterion(self.losses_before, losses_after.detach())
        self.evaluations.append(value)
        return value.detach()

    def require_context(self, estimator: str) -> StepContext:
        """The step's context, or a clear error for estimators that differentiate through the step."""
        if self.context is None:
            raise ValueError(
                f"{estimator} differentiates through the lower-level step and needs its "
                "StepContext: use it inside Marigold(mode='faithful') with "
                "bilevel_mtl.BalancedOptimizer, or build UpperObjective(..., context=...)"
            )
        return self.context


class Estimator(ABC):
    """Estimates :math:`\\nabla_w \\Phi(w)` (shape ``[m]``) at the current weights.

    Random estimators draw from the ``generator`` they are given, so a balancer
    owns (and checkpoints) all randomness.
    """

    @abstractmethod
    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Tensor:
        """Hypergradient estimate of shape ``[m]``, on the device and dtype of ``weights``."""
