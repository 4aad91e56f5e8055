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
    level ascends on them (a min-max) rather than descends.
    """

    maximize_parameters: ClassVar[bool] = False

    @abstractmethod
    def forward(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        """Scalar criterion value; differentiable in ``losses_after`` and own parameters."""
