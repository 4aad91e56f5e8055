"""Upper-level criteria R(f(θ), f(A(λ, θ)))."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor, nn


class Criterion(nn.Module, ABC):
    """An upper-level objective of the task losses before and after the look-ahead step.

    ``forward(losses_before, losses_after)`` returns a scalar to *minimise* over the
    task weights. A criterion may own adversary parameters (e.g. ρ of
    :class:`WorstCaseDecrement`); ``maximize_parameters`` says whether the upper
    level ascends on them (a min-max) rather than descends. A criterion that also depends
    on the weights of the step (``depends_on_weights``, e.g. :class:`LogDecrement`) takes
    them as ``forward(losses_before, losses_after, weights=...)``.
    """

    maximize_parameters: ClassVar[bool] = False
    depends_on_weights: ClassVar[bool] = False
    has_first_order_gradient: ClassVar[bool] = False

    @abstractmethod
    def forward(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        """Scalar criterion value; differentiable in ``losses_after`` and own parameters."""

    def value(self, losses_before: Tensor, losses_after: Tensor, weights: Tensor) -> Tensor:
        """The criterion after a step with ``weights`` (passed on only where it depends on them)."""
        if self.depends_on_weights:
            return self(losses_before, losses_after, weights=weights)  # type: ignore[no-any-return]
        return self(losses_before, losses_after)  # type: ignore[no-any-return]

    def first_order_gradient(self, losses_before: Tensor, losses_after: Tensor, weights: Tensor) -> Tensor:
        r""":math:`\nabla_\lambda R` from one measured step, where the criterion has a first-order
        closed form (used by :class:`~bilevel_mtl.estimators.FirstOrder`)."""
        del losses_before, losses_after, weights
        raise TypeError(
            f"{type(self).__name__} has no first-order gradient from measured losses: use the "
            "FirstOrder estimator with LogDecrement, or another estimator"
        )
