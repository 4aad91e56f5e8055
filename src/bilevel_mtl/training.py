"""The one-call training step: closure → the balancer decides → the trainer writes ``.grad`` →
optimizer step → the balancer commits → record."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ._amp import Scale
from ._checks import (
    NonFiniteGradientError,
    NonFiniteLossError,
    check_choice,
    check_finite_losses,
    nonfinite_flags,
)
from ._rollback import Rollback
from ._state_copy import StateCopy
from .balancers.base import Balancer, Decision, UpperReport, check_state_identity
from .context import Closure, StepContext
from .distributed import DataParallel, ProcessGroup, all_reduce_mean

NONFINITE_POLICIES = ("raise", "skip")
_KEPT_STEP = "balancer update:"
"""How a record's ``skipped`` starts when the model step was kept (only the balancer's update skipped)."""
HALF_DTYPES = (torch.float16, torch.bfloat16)
_OWN_GRADIENT = "_bilevel_mtl_step_version"
"""Attribute set on the ``.grad`` a step leaves: its version counter then (see accumulation)."""


class StepRecord(NamedTuple):
    """Diagnostics of one training step (all tensors detached; reading them syncs the device)."""

    losses: Tensor
    """Task losses before the step, ``[m]`` (the mean over the batches of a multi-batch balancer)."""
    weights: Tensor
    """Task weights the update used, ``[m]``."""
    hypergradient: Tensor | None
    """Upper-level gradient estimate (bi-level balancers), ``[m]``."""
    criterion_value: Tensor | None
    """Upper-level criterion at the evaluated point(s) (bi-level balancers), 0-dim."""
    losses_after: Tensor | None
    """Task losses on the same batch after the step, when the balancer asked for them."""
    seconds: float
    """Wall time of the whole step (host time: it does not wait for the device)."""
    skipped: str | None = None
    """``None`` for a complete step, else what was skipped and why (see ``on_nonfinite``)."""
    tasks: tuple[str, ...] | None = None
    """The task names, when the closure returns a mapping ``{name: loss}``; else ``None``."""

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{name: float}`` view for any logger (``loss/0``, ``weight/0``, ..., or
        ``loss/<task name>`` for named losses; ``skipped`` as 1.0 for a skipped step, 0.0 otherwise)."""
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
                keys = self.tasks or range(vector.numel())
                values = zip(keys, vector.tolist(), strict=True)
                flat.update({f"{prefix}{name}/{k}": float(v) for k, v in values})
        if self.criterion_value is not None:
            flat[f"{prefix}criterion"] = float(self.criterion_value)
        return flat


class BalancedOptimizer:
    """Wraps a model's optimizer so that one call trains one balanced multi-task step.

    ``record = BalancedOptimizer(model, optimizer, balancer).step(closure)`` where
    ``closure()`` runs the model on the batch and returns the ``m`` task losses (a
    1-D tensor or a sequence of scalars). The step zeroes the gradients, evaluates
    the closure, lets the balancer decide (:meth:`~bilevel_mtl.Balancer.decide`: weights
    or explicit gradients, from the losses, per-task gradients or a look-ahead), writes
    the gradients, calls ``optimizer.step()``, measures the post-step losses when the
    balancer needs them, lets the balancer commit its state changes
    (:meth:`~bilevel_mtl.Balancer.commit`) and returns a :class:`StepRecord`. The trainer
    is the only place that runs the model's backward pass and writes ``.grad``.

    * **Non-finite values** (``on_nonfinite``, see ``docs/reliability.md``): NaN/inf task
      losses, gradients (the look-ahead's or the update's) or look-ahead losses stop the
      step before the optimizer moves: ``"raise"`` (default) raises
      :class:`~bilevel_mtl.NonFiniteLossError` / :class:`~bilevel_mtl.NonFiniteGradientError`
      naming the tasks or parameters; ``"skip"`` returns a record whose ``skipped`` says
      why. Non-finite post-step losses leave the (finite) model step in place and skip the
      balancer's update from them. The check is one flag on the device, read once per
      step before the optimizer steps (as ``GradScaler`` reads its ``found_inf``).
    * **Mixed precision**: run the closure under ``torch.autocast``; half-precision losses
      are upcast to float32 for the balancer. ``scaler`` (a ``torch.amp.GradScaler``)
      scales every backward of the step, the look-ahead included, unscales the gradients
      the balancer reads, and skips the step on overflow (lowering the scale), for the
      look-ahead as for the real step.
    * **All or nothing** (``atomic``): a step that fails anywhere leaves everything as
      before (:meth:`step`). For balancers that evaluate the closure again after the
      step (``"losses_after"`` in their ``needs``: ``Marigold``, FAMO) this costs one copy
      of the parameters and of the optimizer's state per step; ``atomic=False`` skips it,
      and a failure after the optimizer moved then leaves that update applied.
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
        atomic: bool = True,
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
        if not isinstance(atomic, bool):
            raise TypeError(f"atomic must be True or False, got {atomic!r}")
        self.atomic = atomic
        self.parallel = DataParallel.of(model, process_group)
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self._buffers = list(model.buffers())  # what a failed step restores (BatchNorm statistics)
        self._undo = StateCopy()  # reused buffers to undo an optimizer step
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        # FSDP swaps its sharded parameters for unsharded ones around the forward pass: the
        # names are only needed by the look-ahead, which FSDP refuses anyway.
        missing = [] if self.parallel.sharded else [p for p in self._params if id(p) not in names]
        if missing:
            raise ValueError(
                f"the optimizer holds {len(missing)} parameter(s) that are not in the model; "
                "pass the model whose parameters the optimizer trains"
            )
        # Balancers that read gradients decide with host reads anyway: bad losses are refused first.
        self._reads_device = bool({"gradients", "lookahead"} & balancer.step_needs)
        self._same_batch_checked = False
        self._tasks: tuple[str, ...] | None = None

    def _names(self) -> list[str]:
        names = {id(p): name for name, p in self.model.named_parameters(remove_duplicate=False)}
        return [names.get(id(p), "?") for p in self._params]

    def step(self, closure: Closure) -> StepRecord:
        """One balanced training step on the batch the ``closure`` uses.

        All or nothing: when anything inside raises (the closure, the balancer, the
        optimizer, a non-finite value under ``on_nonfinite="raise"``, a
        ``KeyboardInterrupt``), the model's parameters and buffers, the optimizer, the
        scaler, the balancer and the random streams are as they were before the call, and
        the gradients are ``None`` as after ``zero_grad()`` (see ``docs/reliability.md``).
        A skipped step leaves them so too, except that a ``GradScaler`` lowers its scale
        on overflow.
        """
        if not callable(closure):
            raise TypeError(
                "step() takes a closure: a function that runs the model on the batch and returns the "
                f"task losses, e.g. step(lambda: task_losses(model, batch)); got {type(closure).__name__}"
            )
        self._refuse_accumulated_gradients()
        devices = sorted({p.device for p in self._params}, key=str)
        rollback = Rollback(
            self._buffers,
            self._params,
            self.optimizer,
            self.balancer,
            self.scaler,
            devices,
            self._undo,
        )
        try:
            record = self._step(closure, time.perf_counter(), rollback, devices)
            if record.skipped is not None and not record.skipped.startswith(_KEPT_STEP):
                rollback.restore()
            return record
        except BaseException:
            rollback.restore()
            raise
        finally:
            for p in self._params:
                if p.grad is not None:  # mark the step's own gradients (any trainer recognises them)
                    setattr(p.grad, _OWN_GRADIENT, p.grad._version)

    def _step(
        self, closure: Closure, start: float, rollback: Rollback, devices: Sequence[torch.device]
    ) -> StepRecord:
        self.optimizer.zero_grad(set_to_none=True)
        closure = self._in_task_order(closure)
        raw = _on_devices(closure(), devices)
        graph = self.balancer.check_losses(raw, check_finite=False)
        if not graph.requires_grad:
            raise ValueError(
                "the task losses do not require grad: compute them from the model's "
                "parameters with autograd enabled (not under torch.no_grad())"
            )
        if graph.dtype in HALF_DTYPES:  # the balancer's arithmetic (e.g. λ + r·u) needs float32
            graph = graph.float()
        values = graph.detach()
        if self.parallel.group is not None:
            (values,) = all_reduce_mean([values], self.parallel.group)
        losses_finite = _FiniteFlag(values)
        if self._reads_device and not losses_finite:  # deciding reads the device anyway
            return self._stop(self._loss_error(values), start, values)
        scale = Scale(self.scaler, graph)
        # A step that evaluates the closure again replays the step's random state (this step's
        # needs: a balancer may re-measure only on some steps, e.g. Marigold(measure_every=k)).
        needs = self.balancer.step_needs  # read once: committing may change the next step's
        reevaluates, wants_after = bool({"lookahead", "losses_after"} & needs), "losses_after" in needs
        lower = StepContext(
            self.model,
            self._params,
            self._names,
            self.optimizer,
            closure,
            graph,
            values,
            rng_before=rollback.rng if reevaluates else None,
            parallel=self.parallel,
            scale=scale,
        )
        if reevaluates and not self._same_batch_checked and losses_finite:
            self._check_same_batch(lower, values)
        try:
            decision = self.balancer.decide(lower)
        except NonFiniteGradientError as error:
            if self.scaler is None:
                return self._stop(error, start, values)
            self._scaler_overflow()
            return self._skipped(start, values, None, "step: gradient overflow under GradScaler")
        except NonFiniteLossError as error:
            return self._stop(error, start, values)
        except Exception:
            if not losses_finite:  # NaN losses explain the failure: say so
                return self._stop(self._loss_error(values), start, values)
            raise
        self._write_gradients(graph, decision, scale)
        reports: list[UpperReport | None] = []

        def before_update() -> None:
            """Right before the optimizer steps: commit now, or be ready to undo the update."""
            if wants_after:
                if self.atomic:
                    rollback.capture_update()
            else:
                reports.append(self.balancer.commit(decision, None))

        skipped = self._optimizer_step(values, losses_finite, before_update)
        if skipped is not None:  # step() restores the state, gradients included
            decided = decision.weights if losses_finite else None  # no decision from bad losses
            return self._skipped(start, values, decided, skipped)
        losses_after = None
        if wants_after:
            try:
                with torch.no_grad():
                    losses_after = lower.losses_at()
            except NonFiniteLossError as error:
                return self._after_step_nonfinite(error, start, values, decision.weights)
            reports.append(self.balancer.commit(decision, losses_after))
        report = reports[0] or decision.report
        return StepRecord(
            losses=_per_task(values),
            weights=decision.weights.detach(),
            hypergradient=None if report is None else report.hypergradient,
            criterion_value=None if report is None else report.criterion_value,
            losses_after=losses_after,
            seconds=time.perf_counter() - start,
            tasks=self._tasks,
        )

    def _in_task_order(self, closure: Closure) -> Closure:
        """``closure`` giving its losses in the task order on every call (re-evaluations too)."""

        def ordered() -> Any:
            return self._named(closure())

        return ordered

    def _named(self, raw: Any) -> Any:
        """The closure's losses as a sequence; a mapping ``{name: loss}`` fixes the task names on
        the first step, and every later step must give the same names (in any order)."""
        if not isinstance(raw, Mapping):
            if self._tasks is not None:
                raise ValueError(
                    f"the closure returned named losses {list(self._tasks)} before; return the same "
                    f"mapping on every step, got {type(raw).__name__}"
                )
            return raw
        if not all(isinstance(k, str) for k in raw):
            raise TypeError(f"named task losses need string names, got keys {list(raw)}")
        names = tuple(raw)
        expected = self._tasks if self._tasks is not None else names
        if set(names) != set(expected):
            raise ValueError(
                f"the closure returned losses for tasks {list(names)}, expected {list(expected)}"
            )
        self._tasks = expected
        return [raw[name] for name in expected]

    def _check_same_batch(self, lower: StepContext, values: Tensor) -> None:
        """A re-evaluating balancer's first step: the closure must give the same losses again at
        the same parameters (one extra forward pass, once)."""
        with torch.no_grad():
            again = lower.losses_at()
        rtol = max(1e-4, 4 * torch.finfo(again.dtype).eps)  # the closure's own precision (bf16 ...)
        if not torch.allclose(again.to(values), values, rtol=rtol, atol=rtol * float(values.abs().max())):
            raise ValueError(
                f"the closure returned other losses when called again at the same parameters "
                f"({values.tolist()} then {again.tolist()}): {type(self.balancer).__name__} evaluates "
                "it again on the same batch, so the closure must not draw a new batch or new "
                "random augmentations (other than torch's, which the step replays) on each call; "
                "draw the batch outside the closure"
            )
        self._same_batch_checked = True

    def _loss_error(self, values: Tensor) -> NonFiniteLossError:
        """The error naming the non-finite tasks of ``values``."""
        ranks = "" if self.parallel.group is None else f" (mean over {self.parallel.world_size} ranks)"
        try:
            check_finite_losses(values, ranks)
        except NonFiniteLossError as error:
            return error
        raise AssertionError("the losses are finite")

    def _write_gradients(self, graph: Tensor, decision: Decision, scale: Scale) -> None:
        """The one place that writes ``.grad``: the decision's gradients, scaled like a backward."""
        if decision.gradients is None:
            weights = decision.weights.to(graph)
            if graph.dim() > 1:  # [b, m] losses of b batches: the gradient of w @ (their mean)
                weights = (weights / graph.shape[0]).expand(graph.shape)
            torch.autograd.backward(graph, grad_tensors=scale.outputs(weights))
            return
        if len(decision.gradients) != len(self._params):
            raise ValueError(
                f"{type(self.balancer).__name__} decided {len(decision.gradients)} gradients for "
                f"{len(self._params)} optimizer parameters"
            )
        for param, grad in zip(self._params, decision.gradients, strict=True):
            if grad is not None:
                param.grad = scale.to_grad(grad.detach().to(param.dtype)).clone()

    def _optimizer_step(
        self, values: Tensor, losses_finite: _FiniteFlag, before: Callable[[], None]
    ) -> str | None:
        """Step the optimizer unless a loss or gradient is non-finite; return why it was skipped.

        ``before`` runs once the step is known to happen, right before the optimizer moves.
        The common case (everything finite) reads one flag on the host.
        """
        present = [(p, g) for p in self._params if (g := p.grad) is not None]
        if not present:
            raise ValueError(
                "no optimizer parameter received a gradient: the task losses are not computed from "
                "the parameters the optimizer trains (nothing would change but the balancer's state)"
            )
        if self.scaler is not None:
            if not losses_finite:
                return self._nonfinite(self._loss_error(values))
            self.scaler.unscale_(self.optimizer)
            bad = self._nonfinite_gradients(present)
            if not bad:
                before()
                self.scaler.step(self.optimizer)
            self.scaler.update()
            return "step: gradient overflow under GradScaler" if bad else None
        if bool(self._agree(~_sums_finite([_local(g) for _, g in present], values))):
            if not losses_finite:
                return self._nonfinite(self._loss_error(values))
            bad = self._nonfinite_gradients(present)
            if bad:
                return self._nonfinite(
                    NonFiniteGradientError(
                        f"the gradient is not finite for parameter(s) {bad}; the optimizer step was not taken"
                    )
                )
        before()
        self.optimizer.step()
        return None

    def _nonfinite(self, error: Exception) -> str:
        """Apply the non-finite policy before the optimizer step: raise, or the reason of a skip."""
        if self.on_nonfinite == "raise":
            raise error
        return f"step: {error}"

    def _nonfinite_gradients(self, present: list[tuple[Tensor, Tensor]]) -> list[str]:
        """Names of the parameters whose gradient holds a NaN or an infinity (on any rank)."""
        if not present:
            return []
        bad = self._agree(nonfinite_flags([_local(g) for _, g in present]))
        if not bool(bad.any()):
            return []
        names = dict(zip(map(id, self._params), self._names(), strict=True))
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
        if self.on_nonfinite == "raise":
            raise error
        return self._skipped(start, values, None, f"step: {error}")

    def _after_step_nonfinite(
        self, error: NonFiniteLossError, start: float, values: Tensor, weights: Tensor
    ) -> StepRecord:
        """Non-finite losses after a finite step: raise (the step is undone), or keep the step
        and skip the balancer's update from them."""
        where = " after the step, on the same batch"
        if self.parallel.group is not None:
            where += f" (mean over {self.parallel.world_size} ranks)"
        if self.on_nonfinite == "raise":
            if error.losses is None:
                raise error
            outcome = (
                "the step was undone (model, optimizer and balancer are as before it); "
                "consider a lower learning rate"
            )
            check_finite_losses(error.losses, where, outcome)
        return self._skipped(
            start, values, weights, f"{_KEPT_STEP} post-step losses {error.tasks} not finite"
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
            tasks=self._tasks,
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

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, all or nothing: a state without the optimizer's
        or the balancer's part, or saved by another balancer, is refused before anything loads;
        any other failure puts the previous optimizer, balancer and scaler state back."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping from BalancedOptimizer.state_dict(), got {type(state).__name__}"
            )
        missing = [key for key in ("optimizer", "balancer") if key not in state]
        if missing:
            raise ValueError(
                f"not a BalancedOptimizer state: it has no {missing} (keys: {sorted(map(str, state))}); "
                "nothing was loaded"
            )
        check_state_identity(self.balancer, state["balancer"])
        backup = copy.deepcopy(self.state_dict())
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.balancer.load_state_dict(state["balancer"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except Exception:
            self.optimizer.load_state_dict(backup["optimizer"])
            self.balancer.load_state_dict(backup["balancer"])
            if self.scaler is not None:
                self.scaler.load_state_dict(backup["scaler"])
            raise


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


class _FiniteFlag:
    """Whether every loss of a step is finite, read on the host once and only when asked (the
    common path never asks: :func:`_sums_finite` checks the losses with the gradients)."""

    def __init__(self, values: Tensor) -> None:
        self._values = values
        self._finite: bool | None = None

    def __bool__(self) -> bool:
        if self._finite is None:
            self._finite = bool(torch.isfinite(self._values).all())
        return self._finite


def _sums_finite(gradients: Sequence[Tensor], values: Tensor) -> Tensor:
    """0-dim bool: whether the sums of the ``gradients`` and of ``values`` are all finite.

    NaN and inf propagate through a sum, so False exactly when an entry is NaN or inf, or when
    a sum overflows (a false alarm that the caller re-checks element by element). One sum per
    tensor and a few ops: a sum is ~10x faster than ``isfinite().all()`` on CPU.
    """
    device = values.device
    with torch.no_grad():
        sums = [s if (s := g.sum()).device == device else s.to(device) for g in gradients]
        sums.append(values.sum())
        return torch.stack(sums).abs().sum() < math.inf


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of an FSDP (DTensor) gradient; the tensor itself otherwise."""
    to_local = getattr(tensor, "to_local", None)
    local: Tensor = to_local() if callable(to_local) else tensor
    return local


def _per_task(values: Tensor) -> Tensor:
    """The ``[m]`` losses of a record (the mean over the batches of a multi-batch balancer)."""
    values = values.detach()
    return values if values.dim() == 1 else values.mean(0)
