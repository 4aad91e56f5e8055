"""Any user callable as an upper-level criterion."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .base import Criterion


class FunctionCriterion(Criterion):
    """Wrap ``fn(losses_before, losses_after) -> scalar tensor`` (to minimise) as a criterion.

    Example: ``FunctionCriterion(lambda before, after: (after / before).max())``.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"FunctionCriterion needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def forward(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        value = self.fn(losses_before, losses_after)
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise ValueError(
                f"criterion function must return a scalar tensor, got "
                f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
            )
        return value.reshape(())
