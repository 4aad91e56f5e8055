"""Hypergradient estimators of ∇_λ Φ(λ), Φ(λ) = R(f(θ), f(A(λ, θ))), and what they return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..balancers.base import Cost
from ..criteria import Criterion
from ..lower_level import LowerLevel

_REGISTRY: dict[str, type[Estimator]] = {}


def registered_estimators() -> dict[str, type[Estimator]]:
    """Every registered estimator class by name, in registration order."""
    return dict(_REGISTRY)


class UpperObjective:
    r"""The upper-level objective at the current iterate, :math:`\Phi(w) = R(f(\theta), f(A(w,\theta)))`.

    ``losses_after(w)`` returns :math:`f(A(w, \theta))` on the step's batch. Calling the
    objective evaluates Φ with no gradient to the model; the value stays attached to
    the criterion's own parameters (the adversary ρ), so that the balancer can turn the
    values an estimator returns into the adversary's gradient.

    Estimators that differentiate through the step (unrolled, implicit, exact) also
    get the lower level itself (``lower``, a :class:`~bilevel_mtl.lower_level.LowerLevel`).
    """

    def __init__(
        self,
        criterion: Criterion,
        losses_before: Tensor,
        losses_after: Callable[[Tensor], Tensor],
        lower: LowerLevel | None = None,
    ) -> None:
        self.criterion = criterion
        self.losses_before = losses_before.detach()
        self.losses_after = losses_after
        self.lower = lower
        self.num_tasks = self.losses_before.numel()

    @classmethod
    def lookahead(
        cls, criterion: Criterion, lower: LowerLevel, loss_weights: Callable[[Tensor], Tensor] | None = None
    ) -> UpperObjective:
        """Φ(w) = R(f(θ), f(A(w, θ))) for one training step, A = the user's optimizer from its warm state.

        ``losses_after(w)`` is one backward on the step's graph (the weighted gradient),
        the look-ahead, and one forward on the same batch with the same dropout masks.
        ``loss_weights`` maps the upper level's weights to the weights of the losses in the
        step (default: the same; e.g. weights on the log-losses, see
        :meth:`~bilevel_mtl.balancers.UpperLevel.loss_weights`).
        """
        lookahead = lower.lookahead()

        def losses_after(weights: Tensor) -> Tensor:
            on_losses = weights if loss_weights is None else loss_weights(weights)
            return lower.losses_at(lookahead.step(lower.gradients(on_losses)).params)

        return cls(criterion, lower.losses, losses_after, lower)

    def __call__(self, weights: Tensor) -> Tensor:
        """Φ(weights), attached to the criterion's parameters only."""
        with torch.no_grad():
            after = self.losses_after(weights).detach()
        return self.value(after, weights)

    def evaluate(self, points: Tensor) -> Tensor:
        """Φ at each row of ``points`` (shape ``[p, m]``), as a vector ``[p]``."""
        return torch.stack([self(w) for w in points])

    def value(self, losses_after: Tensor, weights: Tensor | None = None) -> Tensor:
        """The criterion at ``losses_after`` (treated as data) after a step with ``weights`` (needed
        by criteria that depend on them), attached to the criterion's parameters."""
        with torch.enable_grad():  # keep the adversary's graph
            if weights is None:
                value: Tensor = self.criterion(self.losses_before, losses_after.detach())
            else:
                value = self.criterion.value(self.losses_before, losses_after.detach(), weights.detach())
        return value

    def require_lower(self, estimator: str) -> LowerLevel:
        """The step's lower level, or a clear error for estimators that differentiate through the step."""
        check_weight_free(self.criterion, estimator)
        if self.lower is None:
            raise ValueError(
                f"{estimator} differentiates through the lower-level step and needs it: use it "
                "inside bilevel_mtl.balancers.MarigoldFaithful with bilevel_mtl.BalancedOptimizer, "
                "or build UpperObjective.lookahead(criterion, lower)"
            )
        return self.lower


def check_weight_free(criterion: Criterion, estimator: str) -> None:
    """Refuse a criterion that depends on the step's weights for an estimator that differentiates
    the criterion through the losses after the step only."""
    if criterion.depends_on_weights:
        raise ValueError(
            f"{estimator} differentiates the criterion through the losses after the step, but "
            f"{type(criterion).__name__} also depends on the step's weights: use the FirstOrder "
            "estimator or a zeroth-order one (SinglePoint, TwoPoint, ForwardDifference)"
        )


@dataclass(frozen=True)
class Estimate:
    """One hypergradient estimate and the criterion values it saw."""

    gradient: Tensor
    """The estimate of :math:`\\nabla_w\\Phi` (``[m]``, on the device and dtype of the weights)."""
    values: list[Tensor]
    """The criterion at every point evaluated, attached to the criterion's parameters (their
    mean gives the adversary's gradient and the reported criterion value)."""


class Estimator(ABC):
    """Estimates :math:`\\nabla_w \\Phi(w)` (shape ``[m]``) at the current weights.

    Random estimators draw from the ``generator`` they are given, so a balancer owns
    (and checkpoints) all randomness. Subclasses that set :attr:`name` are registered
    (``bilevel-mtl list``, ``build_estimator``).
    """

    name: ClassVar[str | None] = None
    """Registry name; ``None`` for abstract bases."""
    through_step: ClassVar[bool] = False
    """Whether it differentiates through the lower-level step (needs the lower level itself)."""
    reference: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    cost: ClassVar[Cost] = "O(d)"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is not None:
            if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
                raise TypeError(f"estimator name {name!r} is taken by {_REGISTRY[name].__qualname__}")
            _REGISTRY[name] = cls

    @abstractmethod
    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Estimate:
        """The hypergradient estimate and the criterion values it saw."""
