"""The one-call training step: closure → balanced backward → optimizer step → record."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .balancers import Balancer
from .context import Closure, RngSnapshot, StepContext


class StepRecord(NamedTuple):
    """Diagnostics of one training step (all tensors detached)."""

    losses: Tensor
    """Task losses before the step, ``[m]`` (the mean over the batches of a multi-batch balancer)."""
    weights: Tensor
    """Task weights the update used, ``[m]``."""
    hypergradient: Tensor | None
    """Upper-level gradient estimate (bi-level balancers), ``[m]``."""
    criterion_value: float | None
    """Upper-level criterion at the evaluated point(s) (bi-level balancers)."""
    losses_after: Tensor | None
    """Task losses on the same batch after the step, when the balancer asked for them."""
    seconds: float
    """Wall time of the whole step."""

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{name: float}`` view for any logger (``loss/0``, ``weight/0``, ...)."""
        flat: dict[str, float] = {f"{prefix}seconds": self.seconds}
        vectors = {
            "loss": self.losses,
            "weight": self.weights,
            "hypergradient": self.hypergradient,
            "loss_after": self.losses_after,
        }
        for name, vector in vectors.items():
            if vector is not None:
                flat.update({f"{prefix}{name}/{i}": float(v) for i, v in enumerate(vector)})
        if self.criterion_value is not None:
            flat[f"{prefix}criterion"] = self.criterion_value
        return flat


class BalancedOptimizer:
    """Wraps a model's optimizer so that one call trains one balanced multi-task step.

    ``record = BalancedOptimizer(model, optimizer, balancer).step(closure)`` where
    ``closure()`` runs the model on the batch and returns the ``m`` task losses (a
    1-D tensor or a sequence of scalars). The step zeroes the gradients, evaluates
    the closure, lets the balancer set the gradients (and run its look-ahead),
    calls ``optimizer.step()``, passes the balancer the post-step losses when it
    asks for them, and returns a :class:`StepRecord`.

    Non-finite losses raise :class:`~bilevel_mtl.NonFiniteLossError` naming the
    task before anything is updated. Learning-rate schedulers keep working on
    ``optimizer`` as usual.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, balancer: Balancer):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(balancer, Balancer):
            raise TypeError(f"balancer must be a bilevel_mtl Balancer, got {type(balancer).__name__}")
        if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
            raise ValueError("the optimizer has no trainable parameters (all frozen or empty)")
        self.model = model
        self.optimizer = optimizer
        self.balancer = balancer

    def _devices(self) -> list[torch.device]:
        return sorted({p.device for p in self.model.parameters()}, key=str)

    def step(self, closure: Closure) -> StepRecord:
        """One balanced training step on the batch the ``closure`` uses."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        rng_before = RngSnapshot(self._devices())
        losses = self.balancer.check_losses(closure())
        if not losses.requires_grad:
            raise ValueError(
                "the task losses do not require grad: compute them from the model's "
                "parameters with autograd enabled (not under torch.no_grad())"
            )
        context = StepContext(self.model, self.optimizer, closure, losses, rng_before)
        output = self.balancer.backward(losses, context)
        self.optimizer.step()
        upper, losses_after = output.upper, None
        if self.balancer.needs_losses_after:
            with torch.no_grad():
                losses_after = context.losses_at()
            upper = self.balancer.observe(losses_after) or upper
        return StepRecord(
            losses=losses.detach() if losses.dim() == 1 else losses.detach().mean(0),
            weights=output.weights.detach(),
            hypergradient=None if upper is None else upper.hypergradient,
            criterion_value=None if upper is None else upper.criterion_value,
            losses_after=losses_after,
            seconds=time.perf_counter() - start,
        )

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and balancer state (the model's is ``model.state_dict()``)."""
        return {"optimizer": self.optimizer.state_dict(), "balancer": self.balancer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
