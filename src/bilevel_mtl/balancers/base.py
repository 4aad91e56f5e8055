"""The balancer interface: each method declares itself once; it decides, the trainer writes gradients.

A balancer class carries, as class attributes, everything the rest of the package (the
registry, ``bilevel-mtl list``, the shared test suites, the generated documentation)
needs to know about the method. Subclasses that set :attr:`Balancer.name` are registered
automatically.

One training step, as :class:`~bilevel_mtl.BalancedOptimizer` runs it:

1. the closure gives the task losses;
2. ``decision = balancer.decide(lower)``: the balancer *decides* (weights, or explicit
   gradients for gradient balancers, plus what its upper level learnt), reading the
   lower level through :class:`~bilevel_mtl.lower_level.LowerLevel`; it changes nothing;
3. the trainer writes ``.grad`` and steps the optimizer;
4. ``balancer.commit(decision, losses_after)``: the balancer's state changes apply, once
   the step has completed. A step that fails or is skipped never commits.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from .._checks import as_loss_vector, check_num_tasks

if TYPE_CHECKING:
    from ..lower_level import LowerLevel

Cost = Literal["loss-only O(1)", "O(d)", "O(m·d)"]
COST_CLASSES: tuple[Cost, ...] = ("loss-only O(1)", "O(d)", "O(m·d)")
"""Cost per training step beyond LS's one forward and one backward: weights from the loss
values only (at most an extra forward); a constant number of extra passes or
parameter-sized buffers, independent of ``m``; the per-task gradients (``m`` Jacobian rows)."""

Need = Literal["gradients", "lookahead", "losses_after"]
"""What a step needs beyond the task losses: the per-task gradients (or representation
gradients), a look-ahead of the user's optimizer, the losses after the step on the same batch."""

ScaleInvariance = Literal["update", "direction", "weights", "common", "none"]
"""What per-task loss scales :math:`f_i \\to c_i f_i` leave unchanged: the parameter update,
its direction, the weights; ``"common"``: only a common scale :math:`f\\to cf` leaves the
weights unchanged; ``"none"``: nothing claimed."""

_REGISTRY: dict[str, type[Balancer]] = {}

STATE_FORMAT = 1
"""Version of the layout of a balancer's ``state_dict``; bumped when it changes."""
_IDENTITY = "_bilevel_mtl"
"""The ``state_dict`` key of what the state is for (method, class, number of tasks, format)."""


def registered_balancers() -> dict[str, type[Balancer]]:
    """Every registered balancer class by name, in registration order."""
    return dict(_REGISTRY)


@dataclass(frozen=True)
class UpperReport:
    """What the upper level of a bi-level balancer learnt in one step (detached tensors)."""

    hypergradient: Tensor
    """The estimate of the criterion's gradient with respect to the weights (``[m]``)."""
    criterion_value: Tensor
    """The criterion at the evaluated point(s) (a 0-dim tensor: reading it syncs the device)."""


@dataclass(frozen=True)
class Decision:
    """What a balancer decided for one step; nothing is applied until :meth:`Balancer.commit`."""

    losses: Tensor
    """The detached task losses the decision was made from (``[m]``, or ``[b, m]``)."""
    weights: Tensor
    """The task weights of the update (``[m]``); the trainer backpropagates ``weights @ losses``
    unless :attr:`gradients` is given."""
    gradients: list[Tensor | None] | None = None
    """An explicit gradient per optimizer parameter (``None`` where a parameter gets none),
    in true (unscaled) units; gradient balancers whose update is not ``weights @ G`` give it."""
    report: UpperReport | None = None
    """What the upper level learnt while deciding (bi-level balancers deciding before the step)."""
    pending: Mapping[str, Any] = field(default_factory=dict)
    """Balancer-private state to apply at :meth:`Balancer.commit`."""


class Balancer(nn.Module, ABC):
    """Chooses how a multi-task model's task losses combine into one update.

    **Declaration** (class attributes, read by the registry, the CLI, the tests and the docs):
    :attr:`name`, :attr:`reference`, :attr:`summary`, :attr:`cost`, :attr:`needs`,
    :attr:`num_batches`, :attr:`simplex`, :attr:`stateful`, :attr:`randomized`,
    :attr:`scale_invariance`, :attr:`permutation_equivariant`, :attr:`requires`.

    **Contract**: :meth:`decide` is pure (no state changes); :meth:`commit` applies the
    state changes of a completed step. A balancer never runs ``backward`` on the model or
    writes ``.grad``: :class:`~bilevel_mtl.BalancedOptimizer` does. A balancer is an
    ``nn.Module``, so ``state_dict``/``load_state_dict`` carry its state.
    """

    name: ClassVar[str | None] = None
    """Registry name (``build_balancer(name, m)``); ``None`` for abstract bases (not registered)."""
    reference: ClassVar[str] = ""
    """The paper."""
    summary: ClassVar[str] = ""
    """One line: what the method does."""
    cost: ClassVar[Cost] = "loss-only O(1)"
    """Cost class (:data:`COST_CLASSES`)."""
    needs: ClassVar[frozenset[Need]] = frozenset()
    """What a step needs beyond the task losses (:data:`Need`)."""
    num_batches: ClassVar[int] = 1
    """Independent batches per step (rows of the closure's ``[b, m]`` losses when > 1)."""
    simplex: ClassVar[bool] = False
    """Whether the reported weights lie on the probability simplex."""
    stateful: ClassVar[bool] = False
    """Whether the balancer carries state from step to step (its ``state_dict`` matters)."""
    randomized: ClassVar[bool] = False
    """Whether it draws random numbers (from its own seeded generator, saved in ``state_dict``)."""
    scale_invariance: ClassVar[ScaleInvariance] = "none"
    """What per-task loss scales leave unchanged (:data:`ScaleInvariance`)."""
    permutation_equivariant: ClassVar[bool] = True
    """Whether permuting the tasks permutes the weights (and nothing else)."""
    requires: ClassVar[Mapping[str, str]] = {}
    """Constructor arguments without a default: name -> what to pass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        if name in _REGISTRY and _REGISTRY[name].__qualname__ != cls.__qualname__:
            raise TypeError(f"balancer name {name!r} is taken by {_REGISTRY[name].__qualname__}")
        if cls.cost not in COST_CLASSES:
            raise TypeError(f"{cls.__name__}.cost must be one of {COST_CLASSES}, got {cls.cost!r}")
        _REGISTRY[name] = cls

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)
        self.register_state_dict_post_hook(_add_identity)  # type: ignore[no-untyped-call]
        self.register_load_state_dict_pre_hook(_check_identity)  # type: ignore[no-untyped-call]

    def identity(self) -> dict[str, Any]:
        """What this balancer's state is for: checked by :meth:`load_state_dict` before anything loads."""
        return {
            "method": type(self).name,
            "class": type(self).__qualname__,
            "num_tasks": self.num_tasks,
            "format": STATE_FORMAT,
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """``nn.Module.load_state_dict``, all or nothing: a state saved for another method, class
        or number of tasks is refused before anything is applied, naming both sides; any other
        failure (a tensor's size, a missing key) puts the previous state back before raising."""
        check_state_identity(self, state_dict)
        backup = copy.deepcopy(self.state_dict())
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except Exception as error:
            super().load_state_dict(backup)
            raise ValueError(
                f"cannot load this state into {_describe(self.identity())}: {error}; nothing was changed"
            ) from error

    def capture_state(self) -> Callable[[], None]:
        """Capture the state a training step may change; the returned function puts it back
        (what :class:`~bilevel_mtl.BalancedOptimizer` does when a step fails). Default: a deep
        copy of :meth:`state_dict`; a balancer whose state has a cheaper exact copy overrides it."""
        state = copy.deepcopy(self.state_dict())

        def restore() -> None:
            self.load_state_dict(state)

        return restore

    @property
    def step_needs(self) -> frozenset[Need]:
        """What this balancer's next step needs: the class's :attr:`needs`, unless its
        configuration or the step needs less (e.g. ``Marigold(measurement="next-batch")``
        never wants ``losses_after``, the default ``Marigold`` only on every 16th step)."""
        return self.needs

    @property
    def needs_losses_after(self) -> bool:
        """Whether :meth:`commit` wants the losses on the same batch after the step."""
        return "losses_after" in self.step_needs

    @abstractmethod
    def decide(self, lower: LowerLevel) -> Decision:
        """This step's decision from the lower level (pure: changes no state)."""

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> UpperReport | None:
        """Apply the state changes of ``decision`` once its step has completed; default: none."""
        del decision, losses_after
        return None

    def check_losses(self, losses: Tensor | Sequence[Tensor], check_finite: bool = True) -> Tensor:
        """Validated ``[m]`` loss vector, or ``[b, m]`` for balancers that need ``b`` batches
        (``check_finite``: also refuse NaN/inf, reading the values on the host)."""
        if self.num_batches == 1:
            return as_loss_vector(losses, self.num_tasks, check_finite)
        b, m = self.num_batches, self.num_tasks
        hint = (
            f"{type(self).__name__} needs {b} independent batches per step: make the closure return a "
            f"[{b}, {m}] tensor of task losses, one row per batch, e.g. "
            f"torch.stack([task_losses(next(batches)) for _ in range({b})])"
        )
        if isinstance(losses, Tensor):
            if tuple(losses.shape) != (b, m):
                raise ValueError(f"{hint}; got shape {tuple(losses.shape)}")
            rows: list[Any] = list(losses.unbind(0))
        else:
            rows = list(losses)
            if len(rows) != b:
                raise ValueError(f"{hint}; got {len(rows)} rows")
        return torch.stack([as_loss_vector(row, m, check_finite) for row in rows])


class LossBalancer(Balancer):
    """A balancer whose weights are a function of the loss values (and its own state).

    Use it in a loop you own: ``w = balancer.weights(losses)`` (pure),
    ``(w @ losses).backward()``, ``optimizer.step()``, then
    ``balancer.update(losses, losses_after)`` (``losses_after``: the task losses recomputed
    on the same batch under ``torch.no_grad()``, only where ``"losses_after"`` is in
    :attr:`needs`; otherwise omit it). Calling :meth:`weights` again before
    :meth:`update` gives the same weights.

    A subclass implements :meth:`_weights` (and :meth:`_update` when it has state); both
    receive validated, detached, finite losses.
    """

    def weights(self, losses: Tensor | Sequence[Tensor]) -> Tensor:
        """Task weights ``[m]`` (detached) for this step's losses; changes no state.

        A stateful balancer warns when it is asked for the weights of new losses without an
        :meth:`update` since the last call (its state would never change)."""
        values = self.check_losses(losses).detach()
        weights = self._weights(values)
        if self.stateful and type(self)._update is not LossBalancer._update:
            last = self.__dict__.get("_weighed")
            if last is not None and not torch.equal(last, values):
                warnings.warn(
                    f"{type(self).__name__}.weights() was called for new losses without update() since "
                    "the last call: its state changes only in update(losses[, losses_after]), to be "
                    "called after each optimizer step",
                    stacklevel=2,
                )
            self.__dict__["_weighed"] = values
        return weights

    def update(
        self, losses: Tensor | Sequence[Tensor], losses_after: Tensor | Sequence[Tensor] | None = None
    ) -> UpperReport | None:
        """Apply this step's state changes, after the optimizer step. Refuses what
        :meth:`weights` refuses (negative losses where the method needs them positive, ...)
        before anything changes."""
        before = self.check_losses(losses).detach()
        if self.needs_losses_after and losses_after is None:
            raise ValueError(
                f"{type(self).__name__}.update() needs losses_after: the task losses on the same "
                "batch after the optimizer step (under torch.no_grad())" + self._losses_after_hint()
            )
        if losses_after is not None and not self.needs_losses_after:
            raise ValueError(
                f"{type(self).__name__}.update() takes no losses_after here"
                + self._without_losses_after_hint()
            )
        after = None if losses_after is None else self.check_losses(losses_after).detach().to(before)
        for values in (before, after):
            if values is not None:
                self._weights(values)  # the same domain checks as weights()
        self.__dict__.pop("_weighed", None)
        return self._update(before, after)

    def _without_losses_after_hint(self) -> str:
        """Why an ``update`` given ``losses_after`` does not use it, and what to call instead."""
        return ": it learns from the losses of the steps themselves; call update(losses)"

    def _losses_after_hint(self) -> str:
        """What to add to the error of an ``update`` without the ``losses_after`` it needs."""
        return ""

    @abstractmethod
    def _weights(self, losses: Tensor) -> Tensor:
        """The weights for validated losses (pure)."""

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> UpperReport | None:
        """The state changes of a completed step (validated losses); default: none."""
        del losses, losses_after
        return None

    def decide(self, lower: LowerLevel) -> Decision:
        return Decision(losses=lower.losses, weights=self._weights(lower.losses))

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> UpperReport | None:
        return self._update(decision.losses, losses_after)


def forked(generator: torch.Generator) -> torch.Generator:
    """A new generator in ``generator``'s state: draw from it without advancing the original."""
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


def _describe(identity: Mapping[str, Any]) -> str:
    method, tasks = identity.get("method"), identity.get("num_tasks")
    return f"{identity.get('class', '?')} (method {method!r}, {tasks} tasks)"


def check_state_identity(balancer: Balancer, state_dict: Any) -> None:
    """Refuse, naming both sides, a ``state_dict`` saved by another method, class or ``m``."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"a balancer's state must be a mapping, got {type(state_dict).__name__}")
    saved = state_dict.get(_IDENTITY)
    if saved is not None:
        _refuse_other(balancer, saved)


def _refuse_other(balancer: Balancer, saved: Any) -> None:
    """Raise ``ValueError`` when ``saved`` (a state's identity) is not ``balancer``'s."""
    own = balancer.identity()
    keys = ("method", "class", "num_tasks")
    if not isinstance(saved, Mapping) or any(saved.get(k) != own[k] for k in keys):
        theirs = _describe(saved) if isinstance(saved, Mapping) else repr(saved)
        raise ValueError(f"this state was saved by {theirs}, not by {_describe(own)}: nothing was loaded")
    if saved.get("format", STATE_FORMAT) > STATE_FORMAT:
        raise ValueError(
            f"this state has format {saved['format']}, newer than this version of bilevel_mtl "
            f"reads ({STATE_FORMAT}): nothing was loaded"
        )


def _add_identity(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    assert isinstance(module, Balancer)
    state_dict[prefix + _IDENTITY] = module.identity()


def _check_identity(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Before a (possibly nested) balancer loads: refuse another's state, and consume the key."""
    assert isinstance(module, Balancer)
    saved = state_dict.pop(prefix + _IDENTITY, None)
    if saved is not None:
        _refuse_other(module, saved)
