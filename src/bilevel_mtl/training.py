"""The one-call training step: closure → balanced backward → optimizer step → record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._checks import (
    NonFiniteGradientError,
    NonFiniteLossError,
    check_choice,
    check_finite_losses,
    nonfinite_flags,
)
from ._surrogate import BackwardCounter, surrogate_losses
from .balancers import Balancer
from .context import Closure, RngSnapshot, StepContext
from .distributed import DataParallel, ProcessGroup, all_reduce_mean

NONFINITE_POLICIES = ("raise", "skip")
HALF_DTYPES = (torch.float16, torch.bfloat16)
_OWN_GRADIENT = "_bilevel_mtl_step_version"
"""Attribute set on the ``.grad`` a step leaves: its version counter then (see accumulation)."""


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
    skipped: str | None = None
    """``None`` for a complete step, else what was skipped and why (see ``on_nonfinite``)."""

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{name: float}`` view for any logger (``loss/0``, ``weight/0``, ..., ``skipped``
        as 1.0 for a skipped step, 0.0 otherwise)."""
        flat: dict[str, float] = {
            f"{prefix}seconds": self.seconds,
            f"{prefix}skipped": float(self.skipped is not None),
        }
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

    * **Non-finite values** (``on_nonfinite``, see ``docs/reliability.md``): NaN/inf task
      losses, gradients (the look-ahead's or the update's) or look-ahead losses stop the
      step before the optimizer moves: ``"raise"`` (default) raises
      :class:`~bilevel_mtl.NonFiniteLossError` / :class:`~bilevel_mtl.NonFiniteGradientError`
      naming the tasks or parameters; ``"skip"`` returns a record whose ``skipped`` says
      why. Non-finite post-step losses leave the (finite) model step in place and skip the
      balancer's update from them.
    * **Mixed precision**: run the closure under ``torch.autocast``; half-precision losses
      are upcast to float32 for the balancer. ``scaler`` (a ``torch.amp.GradScaler``)
      scales every backward of the step, the look-ahead included, unscales the gradients
      the balancer reads, and skips the step on overflow (lowering the scale), for the
      look-ahead as for the real step.
    * **Data parallelism** (``process_group``; ``"auto"`` takes DDP's or FSDP's): the
      balancer decides from the losses averaged over the ranks and the synchronized
      gradients (:mod:`bilevel_mtl.distributed`); ``None`` turns this off.
    * **Schedulers** keep working on ``optimizer`` (the look-ahead reads the current lr).
      **Gradient accumulation** is refused: a gradient that a ``backward()`` outside
      :meth:`step` left in ``.grad`` raises ``ValueError`` instead of being discarded.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        balancer: Balancer,
        *,
        scaler: torch.amp.GradScaler | None = None,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        process_group: ProcessGroup | Literal["auto"] | None = "auto",
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(balancer, Balancer):
            raise TypeError(f"balancer must be a bilevel_mtl Balancer, got {type(balancer).__name__}")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
        if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
            raise ValueError("the optimizer has no trainable parameters (all frozen or empty)")
        self.model = model
        self.optimizer = optimizer
        self.balancer = balancer
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, NONFINITE_POLICIES)
        self.parallel = DataParallel.of(model, process_group)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    def _devices(self) -> list[torch.device]:
        return sorted({p.device for p in self.model.parameters()}, key=str)

    def step(self, closure: Closure) -> StepRecord:
        """One balanced training step on the batch the ``closure`` uses."""
        self._refuse_accumulated_gradients()
        record = None
        try:
            record = self._step(closure, time.perf_counter())
            return record
        finally:
            if record is None or record.skipped is not None:
                self.balancer.discard_step()
            for p in self._params:
                if p.grad is not None:  # mark the step's own gradients (any trainer recognises them)
                    setattr(p.grad, _OWN_GRADIENT, p.grad._version)

    def _step(self, closure: Closure, start: float) -> StepRecord:
        self.optimizer.zero_grad(set_to_none=True)
        devices = self._devices()
        rng_before = RngSnapshot(devices)
        local, values = self._closure_losses(_on_devices(closure(), devices))
        ranks = "" if self.parallel.group is None else f" (mean over {self.parallel.world_size} ranks)"
        try:
            check_finite_losses(values, ranks)
        except NonFiniteLossError as error:
            return self._stop(error, start, values)
        assert local is not None
        if not local.requires_grad:
            raise ValueError(
                "the task losses do not require grad: compute them from the model's "
                "parameters with autograd enabled (not under torch.no_grad())"
            )
        if local.dtype in HALF_DTYPES:  # the balancer's arithmetic (e.g. λ + r·u) needs float32
            local = local.float()
        values = values.to(local.dtype)
        scale = None if self.scaler is None else self.scaler.scale(torch.ones((), device=local.device))
        counter = BackwardCounter()
        losses = local
        if self.parallel.group is not None or scale is not None:
            losses = surrogate_losses(local, values, scale, counter)
        context = StepContext(
            self.model,
            self.optimizer,
            closure,
            losses,
            rng_before,
            graph=local,
            parallel=self.parallel,
            grad_scale=scale,
        )
        try:
            output = self.balancer.backward(losses, context)
        except NonFiniteGradientError as error:
            if self.scaler is None:
                return self._stop(error, start, values)
            self._scaler_overflow()
            return self._skipped(start, values, None, "step: gradient overflow under GradScaler")
        except NonFiniteLossError as error:
            return self._stop(error, start, values)
        if scale is not None and counter.count == 0:
            # The balancer wrote unscaled gradients (from context.gradients): scale them like backward.
            for p in self._params:
                if p.grad is not None:
                    p.grad.mul_(scale.to(p.grad))
        skipped = self._optimizer_step()
        if skipped is not None:
            return self._stopped_at_update(skipped, start, values, output.weights)
        upper, losses_after = output.upper, None
        if self.balancer.needs_losses_after:
            try:
                with torch.no_grad():
                    losses_after = context.losses_at()
            except NonFiniteLossError as error:
                return self._after_step_nonfinite(error, start, values, output.weights)
            upper = self.balancer.observe(losses_after) or upper
        return StepRecord(
            losses=_per_task(values),
            weights=output.weights.detach(),
            hypergradient=None if upper is None else upper.hypergradient,
            criterion_value=None if upper is None else upper.criterion_value,
            losses_after=losses_after,
            seconds=time.perf_counter() - start,
        )

    def _closure_losses(self, raw: Tensor | Sequence[Tensor]) -> tuple[Tensor | None, Tensor]:
        """The validated local losses (``None`` if non-finite) and the values the balancer decides on."""
        group = self.parallel.group
        try:
            local: Tensor | None = self.balancer.check_losses(raw)
        except NonFiniteLossError as error:
            # Raise at once on a single process; under data parallelism first agree with the
            # other ranks (they would otherwise wait forever in the next collective).
            if error.losses is None or (group is None and self.on_nonfinite == "raise"):
                raise
            local, values = None, error.losses
        else:
            assert local is not None
            values = local.detach()
        if group is not None:
            (values,) = all_reduce_mean([values], group)
        return local, values

    def _optimizer_step(self) -> str | None:
        """Step the optimizer unless a gradient is non-finite; return why it was skipped."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            bad = self._nonfinite_gradients()
            if not bad:
                self.scaler.step(self.optimizer)
            self.scaler.update()
            return "step: gradient overflow under GradScaler" if bad else None
        bad = self._nonfinite_gradients()
        if bad:
            error = NonFiniteGradientError(
                f"the gradient is not finite for parameter(s) {bad}; the optimizer step was not taken"
            )
            if self.on_nonfinite == "raise":
                self.optimizer.zero_grad(set_to_none=True)
                raise error
            return f"step: {error}"
        self.optimizer.step()
        return None

    def _nonfinite_gradients(self) -> list[str]:
        present = [(p, g) for p in self._params if (g := p.grad) is not None]
        if not present:
            return []
        bad = self._agree(nonfinite_flags([_local(g) for _, g in present]))
        if not bool(bad.any()):
            return []
        names = {id(p): name for name, p in self.model.named_parameters()}
        return [names.get(id(p), "?") for (p, _), flag in zip(present, bad.tolist(), strict=True) if flag]

    def _agree(self, flags: Tensor) -> Tensor:
        """Boolean flags computed on local shards (FSDP), true where any rank's is true."""
        if not self.parallel.sharded or self.parallel.group is None:
            return flags
        (mean,) = all_reduce_mean([flags.double()], self.parallel.group)
        return mean > 0

    def _scaler_overflow(self) -> None:
        """Let the scaler see the look-ahead's overflow through its public path: skip and back off."""
        assert self.scaler is not None
        self.optimizer.zero_grad(set_to_none=True)
        marker = next(p for p in self._params if p.requires_grad)
        marker.grad = torch.full_like(marker, float("inf"))
        self.scaler.unscale_(self.optimizer)
        self.scaler.step(self.optimizer)  # finds the overflow: the optimizer does not step
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _stop(self, error: Exception, start: float, values: Tensor) -> StepRecord:
        """A non-finite value before the optimizer step: raise it or skip the step."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.on_nonfinite == "raise":
            raise error
        return self._skipped(start, values, None, f"step: {error}")

    def _stopped_at_update(self, reason: str, start: float, values: Tensor, weights: Tensor) -> StepRecord:
        self.optimizer.zero_grad(set_to_none=True)
        return self._skipped(start, values, weights, reason)

    def _after_step_nonfinite(
        self, error: NonFiniteLossError, start: float, values: Tensor, weights: Tensor
    ) -> StepRecord:
        """Non-finite losses after a finite step: keep the step, skip the balancer's update."""
        where = " after the step, on the same batch"
        if self.parallel.group is not None:
            where += f" (mean over {self.parallel.world_size} ranks)"
        outcome = (
            "the model step was taken (its gradients were finite) and the balancer's update "
            "from the post-step losses was skipped; consider a lower learning rate"
        )
        if self.on_nonfinite == "raise":
            if error.losses is None:
                raise error
            check_finite_losses(error.losses, where, outcome)
        return self._skipped(
            start, values, weights, f"balancer update: post-step losses {error.tasks} not finite"
        )

    def _skipped(self, start: float, values: Tensor, weights: Tensor | None, reason: str) -> StepRecord:
        losses = _per_task(values)
        return StepRecord(
            losses=losses,
            weights=torch.full_like(losses, float("nan")) if weights is None else weights.detach(),
            hypergradient=None,
            criterion_value=None,
            losses_after=None,
            seconds=time.perf_counter() - start,
            skipped=reason,
        )

    def _refuse_accumulated_gradients(self) -> None:
        """Refuse gradients left in ``.grad`` by a backward outside :meth:`step` (accumulation)."""
        names = None
        for p in self._params:
            g = p.grad
            if g is None:
                continue
            if getattr(g, _OWN_GRADIENT, None) == g._version:  # left by a step, unmodified since
                continue
            if bool(self._agree(_local(g).detach().ne(0).any())):
                names = names or {id(q): name for name, q in self.model.named_parameters()}
                raise ValueError(
                    "gradient accumulation is not supported: parameter "
                    f"{names.get(id(p), '?')!r} holds a gradient from a backward() outside "
                    "BalancedOptimizer.step(), which computes each step's whole gradient from the "
                    "closure (the balancer decides once per step from the whole batch's losses). "
                    "Call optimizer.zero_grad() before step(); for batches larger than memory, "
                    "lower the batch size or average the losses over micro-batches inside the closure"
                )

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, balancer (and scaler) state (the model's is ``model.state_dict()``)."""
        state = {"optimizer": self.optimizer.state_dict(), "balancer": self.balancer.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def _on_devices(raw: Tensor | Sequence[Tensor], devices: Sequence[torch.device]) -> Tensor | Sequence[Tensor]:
    """``raw`` if its tensors are on one device that holds model parameters, else ``ValueError``."""
    items = [raw] if isinstance(raw, Tensor) else raw if isinstance(raw, list | tuple) else []
    found = sorted({str(t.device) for t in items if isinstance(t, Tensor)})
    if len(found) > 1 or (found and found[0] not in {str(d) for d in devices}):
        raise ValueError(
            f"the task losses are on {found} but the model's parameters are on "
            f"{sorted(str(d) for d in devices)}: compute the losses on the model's device"
        )
    return raw


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of an FSDP (DTensor) gradient; the tensor itself otherwise."""
    to_local = getattr(tensor, "to_local", None)
    local: Tensor = to_local() if callable(to_local) else tensor
    return local


def _per_task(values: Tensor) -> Tensor:
    """The ``[m]`` losses of a record (the mean over the batches of a multi-batch balancer)."""
    values = values.detach()
    return values if values.dim() == 1 else values.mean(0)
