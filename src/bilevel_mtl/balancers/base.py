"""The balancer interface shared by MARIGOLD and the classic methods."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import as_loss_vector, check_num_tasks
from ..context import StepContext


@dataclass
class UpperUpdate:
    """One update of the upper level (bi-level balancers only)."""

    hypergradient: Tensor
    """The estimate of the criterion's gradient with respect to the weights (``[m]``)."""
    criterion_value: float
    """The criterion at the evaluated point(s)."""


@dataclass
class BalancerOutput:
    """What a balancer reports after its backward pass."""

    weights: Tensor
    """The task weights the model's update used (shape ``[m]``)."""
    upper: UpperUpdate | None = None
    """The upper-level update made during the backward pass, if any."""


class Balancer(nn.Module, ABC):
    """Chooses how a multi-task model's task losses combine into one update.

    Two ways to use one:

    * the one-call step, :class:`bilevel_mtl.BalancedOptimizer`, which calls
      :meth:`backward`, then ``optimizer.step()``, then :meth:`observe` when
      ``needs_losses_after`` is set;
    * the low-level path for a loop you own: ``w = balancer.weights(losses)``,
      ``(w @ losses).backward()``, ``optimizer.step()``, and, where
      ``needs_losses_after``, ``balancer.observe(losses_after)`` with the task
      losses recomputed on the same batch under ``torch.no_grad()``.

    A balancer is an ``nn.Module``, so ``state_dict``/``load_state_dict`` carry its state.
    """

    needs_losses_after: bool = False
    """Whether :meth:`observe` wants the losses on the same batch after the step."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)

    @abstractmethod
    def weights(self, losses: Tensor) -> Tensor:
        """Task weights (shape ``[m]``, detached) for this step's losses."""

    def backward(self, losses: Tensor, context: StepContext) -> BalancerOutput:
        """Set the parameters' ``.grad`` for this step; default ``(w @ losses).backward()``."""
        del context
        w = self.weights(losses.detach()).to(losses)
        torch.autograd.backward(torch.dot(w, losses))
        return BalancerOutput(weights=w)

    def observe(self, losses_after: Tensor) -> UpperUpdate | None:
        """Receive the losses on the same batch after the step (when ``needs_losses_after``)."""
        del losses_after
        return None

    def discard_step(self) -> None:
        """Forget what was gathered for a step that will not complete.

        :class:`~bilevel_mtl.BalancedOptimizer` calls it when it stops or skips a step
        (non-finite values, an exception), so that per-step scratch (a pending
        perturbation, captured activations) does not leak into the next step.
        """

    def check_losses(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        """Validated ``[m]`` loss vector (see :func:`bilevel_mtl._checks.as_loss_vector`).

        :class:`~bilevel_mtl.BalancedOptimizer` validates the closure's output with it;
        a balancer that needs several independent batches per step overrides it to
        accept a ``[b, m]`` tensor (one row per batch).
        """
        return as_loss_vector(losses, self.num_tasks)
