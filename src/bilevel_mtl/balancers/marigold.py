"""MARIGOLD: multi-task balancing as a bi-level problem with zeroth-order hypergradients."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_integer, check_nonnegative, check_positive
from .._state_copy import StateCopy
from ..criteria import Criterion, LogDecrement, WorstCaseDecrement
from ..estimators import Estimator, FirstOrder, SinglePoint, UpperObjective, ZerothOrder
from ..estimators.base import check_weight_free
from ..parametrizations import Parametrization, ScaledSoftmax, Softmax
from .base import Balancer, Cost, Decision, LossBalancer, Need, UpperReport, forked

if TYPE_CHECKING:
    from ..lower_level import LowerLevel

UpperOptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
OBJECTIVES = ("losses", "log-losses")
MEASUREMENTS = ("next-batch", "same-batch")


class UpperLevel(Balancer):
    r"""The upper level MARIGOLD's modes share: weights :math:`\lambda` from a ``parametrization``,
    a ``criterion`` :math:`R` (with its adversary, if any), an ``estimator`` of
    :math:`\nabla_\lambda R`, the upper optimizer (Adam with ``lr``) and the generator of
    the estimator's random directions. β = 1, r = 1e-3 and upper Adam lr 1e-4 are the
    paper's Appendix C.

    ``objective``: what the step descends. ``"losses"`` (the paper): :math:`\sum_i\lambda_i f_i`.
    ``"log-losses"``: :math:`\sum_i\lambda_i\log f_i`, with the length of a convex combination
    of the task gradients: the loss weights are :math:`w_i = (\lambda_i/\tilde f_i)/\sum_j
    (\lambda_j/\tilde f_j)` (:meth:`loss_weights`, :math:`\tilde f=\max(f, \epsilon)`, ``min_loss``),
    so the update's direction is free of each task's loss scale. ``weight_decay``: the upper
    Adam's (coupled) L2 term on the upper variables.
    """

    cost: ClassVar[Cost] = "O(d)"
    stateful = True
    randomized = True

    def __init__(
        self,
        num_tasks: int,
        *,
        beta: float = 1.0,
        radius: float = 1e-3,
        lr: float = 1e-4,
        criterion: Criterion | None = None,
        parametrization: Parametrization | None = None,
        estimator: Estimator | None = None,
        upper_optimizer: UpperOptimizerFactory | None = None,
        objective: str = "losses",
        min_loss: float = 1e-12,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(num_tasks)
        if num_tasks < 2:
            raise ValueError(f"{type(self).__name__} balances at least 2 tasks")
        beta = check_positive("beta", beta)
        self.lr = check_positive("lr", lr)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self.min_loss = check_positive("min_loss", min_loss)
        self.parametrization = parametrization or ScaledSoftmax(num_tasks, beta)
        self.criterion = criterion or WorstCaseDecrement(num_tasks, beta)
        self.estimator = estimator or SinglePoint(radius)
        if self.estimator.through_step:
            check_weight_free(self.criterion, repr(self.estimator))
        for part in (self.parametrization, self.criterion):
            sized = getattr(part, "num_tasks", num_tasks)
            if sized != num_tasks:
                raise ValueError(
                    f"{type(self).__name__}({num_tasks}) got {type(part).__name__}({sized}), which is "
                    f"sized for {sized} tasks: build it with {num_tasks}"
                )
        if isinstance(self.estimator, FirstOrder) and not self.criterion.has_first_order_gradient:
            raise TypeError(
                "FirstOrder reads the criterion's gradient off one measured step, which "
                f"{type(self.criterion).__name__} does not give: use LogDecrement, or a zeroth-order "
                "estimator (e.g. estimator=SinglePoint(1e-3))"
            )
        if (
            isinstance(self.estimator, ZerothOrder)
            and not self.parametrization.on_simplex
            and (self.estimator.directions == "tangent" or self.estimator.space == "logits")
        ):
            raise ValueError(
                f"{self.estimator!r} only estimates the gradient along the simplex, but "
                f"{type(self.parametrization).__name__} weights are not on the simplex; use "
                "directions='sphere' and space='weights' or 'log-weights'"
            )
        self.generator = torch.Generator().manual_seed(seed)
        factory = upper_optimizer or (
            lambda groups: torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        )
        self.upper_optimizer = factory(self._upper_groups())

    def loss_weights(self, weights: Tensor, losses: Tensor) -> Tensor:
        """The weights of the task losses in the step for the upper level's ``weights``
        (see ``objective``)."""
        if self.objective == "losses":
            return weights
        if bool((losses < 0).any()):
            raise ValueError(
                f"{type(self).__name__}(objective='log-losses') takes the log of the losses, which "
                f"must be >= 0; got {losses.detach().tolist()}"
            )
        ratios = weights / losses.detach().to(weights).clamp(min=self.min_loss)
        return ratios / ratios.sum()

    @classmethod
    def paper(cls, num_tasks: int, *, seed: int = 0, **options: Any) -> Self:
        r"""The paper's Appendix C exactly: :math:`\lambda=\mathrm{softmax}(\beta u/f)` and
        :math:`\rho=\mathrm{softmax}(\beta v/f)` dividing by the raw losses (no floor:
        ``min_loss_ratio=0``), β = 1, the absolute worst-case decrement with a learned
        adversary, the single-point estimator with r = 1e-3 on the unit sphere, Adam with
        lr 1e-4 on u (descent) and v (ascent). Choices the paper leaves open, named: u and
        v start at 0 (uniform weights); the directions are drawn from a generator seeded
        with ``seed``; ``min_loss=1e-8`` guards an exactly zero loss. ``options`` replace
        single settings (e.g. ``lr=0.01``) for experiments around the paper's configuration.
        """
        return cls(num_tasks, seed=seed, **_paper_options(num_tasks, dict(options)))

    def _upper_groups(self) -> list[dict[str, Any]]:
        def trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
            return [p for p in params if p.requires_grad]

        groups: list[dict[str, Any]] = [{"params": trainable(self.parametrization.parameters())}]
        adversary = trainable(self.criterion.parameters())
        if adversary:
            groups.append({"params": adversary, "maximize": self.criterion.maximize_parameters})
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("neither the parametrization nor the criterion has trainable parameters")
        return groups

    def current_weights(self, losses: Tensor) -> Tensor:
        """The unperturbed weights λ the parametrization gives for ``losses`` (no side effect)."""
        with torch.no_grad():
            weights: Tensor = self.parametrization(self.check_losses(losses).detach())
        return weights

    def _upper_gradients(
        self, before: Tensor, hypergradient: Tensor, values: list[Tensor]
    ) -> tuple[list[Tensor | None], UpperReport]:
        """The upper variables' gradients: the hypergradient chained through the parametrization,
        and the adversary's from the mean criterion value."""
        params = [p for group in self.upper_optimizer.param_groups for p in group["params"]]
        with torch.enable_grad():  # the upper step is often taken under no_grad
            lam = self.parametrization(before)
            value = torch.stack([v.reshape(()) for v in values]).mean()
            outputs, grads = [lam], [hypergradient.to(lam)]
            if value.requires_grad:
                outputs.append(value)
                grads.append(torch.ones_like(value))
            found = torch.autograd.grad(outputs, params, grads, allow_unused=True)
        return list(found), UpperReport(hypergradient=hypergradient.detach(), criterion_value=value.detach())

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, grads: list[Tensor | None]) -> None:
        """One step of the upper ``optimizer`` with ``grads`` (in its parameters' order; ``None``:
        the parameter is skipped, as after a backward that did not reach it)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param, grad in zip(params, grads, strict=True):
            param.grad = None if grad is None else grad.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "upper_optimizer": self.upper_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.upper_optimizer.load_state_dict(state["upper_optimizer"])
        self.generator.set_state(state["generator"])


class Marigold(UpperLevel, LossBalancer):
    r"""MARIGOLD (Chen et al. 2026, "Feed m Birds with One Scone"), the library's default balancer.

    The task weights solve the bi-level problem

    .. math:: \min_{\lambda}\ R\big(f(\theta^k),\, f(A(\lambda, \theta^k)),\, \lambda\big),
              \qquad \theta^{k+1} = A(\lambda, \theta^k),

    where ``A`` is one step of the user's own optimizer and ``R`` the ``criterion``. The real
    step *is* the look-ahead: the model steps with this step's weights (:meth:`weights`), the
    criterion is measured after it, and the upper update (:meth:`update`) applies from the
    next step. Works with any optimizer and in a loop you own.

    **Default** (``Marigold(m)``): weights :math:`\lambda=\mathrm{softmax}(\xi)` on the
    *log*-losses (``objective="log-losses"``: the update's direction is free of every
    task's loss scale), the criterion :class:`~bilevel_mtl.criteria.LogDecrement`
    :math:`R = \tfrac12\sum_i\lambda_i\delta_i` of the per-task log-decrements δ, whose
    gradient is δ itself to first order (:class:`~bilevel_mtl.estimators.FirstOrder`: all
    ``m`` measured decrements, no perturbation), Adam on ξ (``lr`` 0.2, ``weight_decay``
    1e-3), and the step **measured again on its own batch on every 16th step**
    (``measurement="same-batch"``, ``measure_every=16``): one extra forward per 16 steps,
    the upper level learning from those steps only (its lr chosen for that on the Scales
    suite's seeds 0–1). With ``measure_every=1, lr=0.025`` this configuration is FAMO (Liu
    et al. 2023) step for step. ``measurement="next-batch"`` reads the losses after the step
    from the *next* step's forward pass instead (no extra forward at all; noisier, and on
    Scales about one Δm% point behind; its best upper ``lr``/``weight_decay`` there were 0.1
    and 1e-4). See ``docs/marigold.md`` for the ablation that chose the default.

    **The paper** (:meth:`paper`): the perturbed weights :math:`\lambda+ru` of the
    single-point estimator :math:`\frac{m}{r}R(\lambda+ru)\,u`, the worst-case
    decrement with a learned adversary, :math:`\lambda=\mathrm{softmax}(\beta u/f)`,
    measured on the same batch (one extra forward). :class:`MarigoldFaithful` is Algorithm 2.

    ``measurement``: ``"same-batch"`` evaluates the losses again on the step's batch after the
    step, on the first step and every ``measure_every``-th after it (default 16; one extra
    forward on those steps: :class:`~bilevel_mtl.BalancedOptimizer` does it; in your loop pass
    ``losses_after`` to :meth:`update` when :attr:`needs_losses_after` says so, and only
    then); ``"next-batch"`` uses the next step's losses (``update(losses)`` alone; the first
    step only records; ``measure_every`` must be 1). ``estimator``:
    :class:`~bilevel_mtl.estimators.FirstOrder` or a
    :class:`~bilevel_mtl.estimators.SinglePoint` with one direction; other options as
    :class:`UpperLevel`.
    """

    name = "marigold"
    reference = "Chen et al. 2026, 'Feed m Birds with One Scone'"
    summary = "bi-level weights from the per-task log-decrements measured after every 16th real step"
    cost: ClassVar[Cost] = "loss-only O(1)"
    needs = frozenset({"losses_after"})  # at most: on the measured steps (see step_needs)
    awaiting: Tensor
    step_count: Tensor
    previous_losses: Tensor
    previous_point: Tensor
    previous_direction: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        measurement: str = "same-batch",
        measure_every: int | None = None,
        **options: Any,
    ) -> None:
        if "mode" in options:
            raise TypeError(
                "Marigold has no mode argument since 0.2: Marigold(m) is the former mode='perturbed', "
                "MarigoldFaithful(m) the former mode='faithful' (the paper's Algorithm 2)"
            )
        self.measurement = check_choice("measurement", measurement, MEASUREMENTS)
        if measure_every is None:
            measure_every = 16 if self.measurement == "same-batch" else 1
        self.measure_every = check_integer("measure_every", measure_every)
        if self.measure_every > 1 and self.measurement != "same-batch":
            raise ValueError(
                f"measure_every={measure_every} applies to measurement='same-batch' (re-measure the "
                "step's batch on every k-th step); next-batch measures every step at no extra cost"
            )
        for option, part in (("radius", "estimator"), ("beta", "parametrization")):
            if option in options and part not in options:
                raise TypeError(
                    f"Marigold's default {part} has no {option}: {option} sets the paper's "
                    f"({'SinglePoint(r)' if option == 'radius' else 'ScaledSoftmax(m, beta)'}); pass "
                    f"{part}= explicitly, or start from Marigold.paper(m)"
                )
        defaults: dict[str, Any] = {
            "parametrization": Softmax(num_tasks),
            "criterion": LogDecrement(num_tasks),
            "estimator": FirstOrder(),
            "objective": "log-losses",
            "lr": 0.2,
            "weight_decay": 1e-3,
        }
        super().__init__(num_tasks, **{**defaults, **options})
        single = isinstance(self.estimator, SinglePoint) and self.estimator.num_directions == 1
        if not (single or isinstance(self.estimator, FirstOrder)):
            raise ValueError(
                "Marigold evaluates the real step once per iteration: it needs the FirstOrder "
                "estimator or a SinglePoint with num_directions=1; use MarigoldFaithful for others"
            )
        # next-batch: the step awaiting its measurement (none before the first step): its losses,
        # its point (FirstOrder) or its λ and the direction u of λ + ru (SinglePoint)
        self.register_buffer("awaiting", torch.tensor(False))
        self.register_buffer("step_count", torch.tensor(0))  # same-batch: measured when % every == 0
        for name in ("previous_losses", "previous_point", "previous_direction"):
            self.register_buffer(name, torch.zeros(num_tasks))
        self._state_copy = StateCopy()

    @classmethod
    def paper(cls, num_tasks: int, *, seed: int = 0, **options: Any) -> Self:
        r"""The paper's Appendix C exactly (Algorithm 1): :math:`\lambda=\mathrm{softmax}(\beta u/f)` and
        :math:`\rho=\mathrm{softmax}(\beta v/f)` dividing by the raw losses (no floor:
        ``min_loss_ratio=0``), β = 1, the absolute worst-case decrement with a learned
        adversary, the single-point estimator with r = 1e-3 on the unit sphere, Adam with
        lr 1e-4 on u (descent) and v (ascent), the step on :math:`\sum_i\lambda_i f_i`
        measured again on the same batch after every step. Choices the paper leaves open, named: u and v
        start at 0 (uniform weights); the directions are drawn from a generator seeded with
        ``seed``; ``min_loss=1e-8`` guards an exactly zero loss. ``options`` replace single
        settings (e.g. ``lr=0.01``) for experiments around the paper's configuration.
        """
        options = {"measurement": "same-batch", "measure_every": 1, **options}
        return cls(num_tasks, seed=seed, **_paper_options(num_tasks, options))

    def capture_state(self) -> Callable[[], None]:
        """The upper variables, buffers and upper optimizer's state copied into buffers allocated
        once (all are updated in place), and the generator's state when the estimator draws
        directions: no deep copy per step. Before a step that is not measured (same batch,
        between measurements) only the step count and the generator can change, and only they
        are kept."""
        generator = self.generator.get_state() if self._draws else None

        def restore_generator() -> None:
            if generator is not None:
                self.generator.set_state(generator)

        if self.measurement == "same-batch" and not self.needs_losses_after:
            count = self.step_count.clone()

            def restore_count() -> None:
                self.step_count.copy_(count)
                restore_generator()

            return restore_count
        self._state_copy.capture([*self.parameters(), *self.buffers()], self.upper_optimizer)

        def restore() -> None:
            self._state_copy.restore(self.upper_optimizer)
            restore_generator()

        return restore

    def _measured_steps(self) -> str:
        return (
            f" on this step: it re-measures the step's batch on the first step and then every "
            f"{self.measure_every} steps; check balancer.needs_losses_after before each update"
        )

    def _losses_after_hint(self) -> str:
        return "" if self.measure_every == 1 else self._measured_steps()

    def _without_losses_after_hint(self) -> str:
        if self.measurement == "same-batch":
            return self._measured_steps() + " and call update(losses) when it is False"
        return (
            ": measurement='next-batch' measures step k on step k+1's losses; call update(losses) "
            "(Marigold(m, measurement='same-batch') uses losses_after)"
        )

    @property
    def step_needs(self) -> frozenset[Need]:
        """The next step's: ``losses_after`` on a same-batch step that is measured (every
        ``measure_every``-th, starting with the first), nothing otherwise."""
        return frozenset({"losses_after"}) if self.needs_losses_after else frozenset()

    @property
    def needs_losses_after(self) -> bool:
        """Whether the next step is measured again on its batch (same batch, every
        ``measure_every``-th step from the first)."""
        return self.measurement == "same-batch" and int(self.step_count) % self.measure_every == 0

    def _point(self, losses: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """This step's upper-level weights (``λ``, or ``λ + ru`` with the direction ``u``)."""
        lam: Tensor = self.parametrization(losses).detach()
        if not isinstance(self.estimator, SinglePoint):
            return lam, None
        direction = self.estimator.sample(lam, generator)
        return self.estimator.points(lam, direction)[0], direction

    @property
    def _draws(self) -> bool:
        """Whether the estimator draws random directions (the generator is used at all)."""
        return isinstance(self.estimator, SinglePoint)

    def _weights(self, losses: Tensor) -> Tensor:
        """The loss weights of this step (the generator is not advanced)."""
        point, _ = self._point(losses, forked(self.generator) if self._draws else self.generator)
        return self.loss_weights(point, losses)

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> UpperReport | None:
        """The upper update from a measured step: this one (same batch) or the previous one."""
        if self.measurement == "same-batch":
            measured = self.needs_losses_after
            self.step_count.add_(1)
            if not measured:  # no upper step between measurements
                if isinstance(self.estimator, SinglePoint):
                    self._point(losses, self.generator)  # this step's direction, drawn as measured steps do
                return None
            assert losses_after is not None
            point, direction = self._point(losses, self.generator)  # advances the generator
            return self._learn(losses, losses_after.to(losses), point, direction)
        point, direction = self._point(losses, self.generator)  # this step's; advances the generator
        previous = self.previous_losses.clone(), self.previous_point.clone(), self.previous_direction.clone()
        awaiting = bool(self.awaiting)
        self.previous_losses.copy_(losses)
        if direction is None:
            self.previous_point.copy_(point)
        else:  # λ, and the direction of λ + ru (one direction: [1, m])
            self.previous_point.copy_(self.parametrization(losses).detach())
            self.previous_direction.copy_(direction[0])
        self.awaiting.fill_(True)
        if not awaiting:  # the first step: nothing measured, no upper step
            return UpperReport(hypergradient=torch.zeros_like(losses), criterion_value=losses.new_zeros(()))
        if direction is None:
            return self._learn(previous[0], losses, previous[1], None)
        assert isinstance(self.estimator, SinglePoint)
        drawn = previous[2][None]
        point = self.estimator.points(previous[1], drawn)[0]
        return self._learn(previous[0], losses, point, drawn, lam=previous[1])

    def _learn(
        self,
        before: Tensor,
        after: Tensor,
        point: Tensor,
        direction: Tensor | None,
        lam: Tensor | None = None,
    ) -> UpperReport:
        """One upper step from the losses ``before`` and ``after`` a step taken with ``point``
        (``λ + ru`` when ``direction`` is given: ``lam`` is that λ, by default the current one)."""
        with torch.enable_grad():  # the adversary's gradient, even under no_grad
            value = self.criterion.value(before, after, point)
        if direction is None:
            hypergradient = self.criterion.first_order_gradient(before, after, point)
        else:
            assert isinstance(self.estimator, SinglePoint)
            lam = self.parametrization(before).detach() if lam is None else lam
            hypergradient = self.estimator.combine(direction, value.detach()[None], lam)
        grads, report = self._upper_gradients(before, hypergradient, [value])
        self._step(self.upper_optimizer, grads)
        return report


def _paper_options(num_tasks: int, options: dict[str, Any]) -> dict[str, Any]:
    """Appendix C of the paper (see :meth:`Marigold.paper`), with ``options`` replacing single
    settings; ``beta`` and ``radius`` reach the parametrization, criterion and estimator they set."""
    beta = check_positive("beta", options.pop("beta", 1.0))
    radius = check_positive("radius", options.pop("radius", 1e-3))
    return {
        "lr": 1e-4,
        "objective": "losses",
        "weight_decay": 0.0,
        "parametrization": ScaledSoftmax(num_tasks, beta, min_loss_ratio=0.0),
        "criterion": WorstCaseDecrement(num_tasks, beta, min_loss_ratio=0.0),
        "estimator": SinglePoint(radius),
        **options,
    }


class MarigoldFaithful(UpperLevel):
    r"""MARIGOLD's Algorithm 2 (Chen et al. 2026): estimate, update the upper level, then step.

    A *virtual* look-ahead :math:`A(\lambda+ru,\theta)` replicated from the optimizer's warm
    state (one backward, one forward per evaluation) gives the hypergradient estimate
    (any ``estimator``: the paper's single-point by default; ``TwoPoint``, ``Unrolled``,
    ``Implicit``, ``Exact``, see ``docs/estimators.md``), the upper variables take their
    step, and the real step uses the new weights :math:`\lambda^{k+1}`. Needs
    :class:`~bilevel_mtl.BalancedOptimizer` and a supported ``torch.optim`` optimizer.
    2 forwards + 2 backwards with the single-point estimator. Options as :class:`Marigold`.

    The upper step is computed on a copy of the upper level while deciding and applied
    to the balancer when the training step completes.
    """

    name = "marigold_faithful"
    reference = "Chen et al. 2026, 'Feed m Birds with One Scone', Algorithm 2"
    summary = "bi-level weights by zeroth-order hypergradients through a virtual look-ahead"
    needs = frozenset({"lookahead"})
    simplex = True

    def decide(self, lower: LowerLevel) -> Decision:
        before = lower.losses
        objective = UpperObjective.lookahead(
            self.criterion, lower, lambda weights: self.loss_weights(weights, before)
        )
        lam = self.parametrization(before).detach()
        generator = forked(self.generator)
        estimate = self.estimator.estimate(objective, lam, generator)
        grads, report = self._upper_gradients(before, estimate.gradient, estimate.values)
        parametrization, criterion, optimizer = copy.deepcopy(
            (self.parametrization, self.criterion, self.upper_optimizer)
        )
        self._step(optimizer, grads)
        with torch.no_grad():
            weights = self.loss_weights(parametrization(before).detach(), before)
        pending = {
            "parametrization": parametrization.state_dict(),
            "criterion": criterion.state_dict(),
            "upper_optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
        }
        return Decision(losses=before, weights=weights, report=report, pending=pending)

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> None:
        pending = decision.pending
        self.parametrization.load_state_dict(pending["parametrization"])
        self.criterion.load_state_dict(pending["criterion"])
        self.upper_optimizer.load_state_dict(pending["upper_optimizer"])
        self.generator.set_state(pending["generator"])
