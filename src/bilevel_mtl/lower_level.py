"""What a balancer or a hypergradient estimator may ask of the lower level during one step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor

from .lookahead import LookAhead

__all__ = ["LowerLevel"]


class LowerLevel(Protocol):
    r"""One training step's lower level, :math:`\theta \mapsto f(\theta)` on the step's batch.

    Every evaluation at other parameters uses the *same* batch, the same dropout masks
    and copies of the buffers (see :class:`~bilevel_mtl.context.StepContext`), so it
    measures the effect of the parameters and nothing else. All values are global (the
    mean over the ranks under data parallelism) and in true units (unscaled under a
    ``GradScaler``).
    """

    @property
    def params(self) -> list[Tensor]:
        """The optimizer's parameters, flat, in ``param_groups`` order."""
        ...

    @property
    def losses(self) -> Tensor:
        """The step's task losses :math:`f(\\theta)`, detached, ``[m]`` (``[b, m]`` for ``b`` batches)."""
        ...

    def gradients(self, weights: Tensor, create_graph: bool = False) -> list[Tensor | None]:
        r""":math:`\nabla_\theta\, w^\top f(\theta)` per optimizer parameter; ``weights`` ``[k, m]``
        gives ``k`` stacked gradients from one batched backward."""
        ...

    def losses_at(self, params: Sequence[Tensor] | None = None) -> Tensor:
        """The task losses on the step's batch at ``params`` (default: the current parameters)."""
        ...

    def lookahead(self, eps_root: float = 0.0) -> LookAhead:
        """The look-ahead of the user's optimizer from its warm state (one per ``eps_root``)."""
        ...
