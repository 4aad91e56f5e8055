"""MARIGOLD: multi-task balancing as a bi-level problem with zeroth-order hypergradients."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import Tensor, nn

from .._checks import check_positive
from ..criteria import Criterion, WorstCaseDecrement
from ..estimators import Estimator, SinglePoint, UpperObjective, ZerothOrder
from ..parametrizations import Parametrization, ScaledSoftmax
from .base import Balancer, Decision, LossBalancer, UpperReport, forked

if TYPE_CHECKING:
    from ..lower_level import LowerLevel

UpperOptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


class UpperLevel(Balancer):
    r"""The upper level MARIGOLD's modes share: weights :math:`\lambda` from a ``parametrization``,
    a ``criterion`` :math:`R` (with its adversary, if any), an ``estimator`` of
    :math:`\nabla_\lambda R`, the upper optimizer (Adam with ``lr``) and the generator of
    the estimator's random directions. β = 1, r = 1e-3 and upper Adam lr 1e-4 are the
    paper's Appendix C.
    """

    cost = "O(d)"
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
        seed: int = 0,
    ) -> None:
        super().__init__(num_tasks)
        if num_tasks < 2:
            raise ValueError(f"{type(self).__name__} balances at least 2 tasks")
        beta = check_positive("beta", beta)
        self.lr = check_positive("lr", lr)
        self.parametrization = parametrization or ScaledSoftmax(num_tasks, beta)
        self.criterion = criterion or WorstCaseDecrement(num_tasks, beta)
        self.estimator = estimator or SinglePoint(radius)
        for part in (self.parametrization, self.criterion):
            sized = getattr(part, "num_tasks", num_tasks)
            if sized != num_tasks:
                raise ValueError(
                    f"{type(self).__name__}({num_tasks}) got {type(part).__name__}({sized}), which is "
                    f"sized for {sized} tasks: build it with {num_tasks}"
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
        factory = upper_optimizer or (lambda groups: torch.optim.Adam(groups, lr=self.lr))
        self.upper_optimizer = factory(self._upper_groups())

    @classmethod
    def paper(cls, num_tasks: int, *, seed: int = 0) -> Self:
        r"""The paper's Appendix C exactly: :math:`\lambda=\mathrm{softmax}(\beta u/f)` and
        :math:`\rho=\mathrm{softmax}(\beta v/f)` dividing by the raw losses (no floor:
        ``min_loss_ratio=0``), β = 1, the absolute worst-case decrement with a learned
        adversary, the single-point estimator with r = 1e-3 on the unit sphere, Adam with
        lr 1e-4 on u (descent) and v (ascent). Choices the paper leaves open, named: u and
        v start at 0 (uniform weights); the directions are drawn from a generator seeded
        with ``seed``; ``min_loss=1e-8`` guards an exactly zero loss.
        """
        return cls(
            num_tasks,
            beta=1.0,
            radius=1e-3,
            lr=1e-4,
            parametrization=ScaledSoftmax(num_tasks, 1.0, min_loss_ratio=0.0),
            criterion=WorstCaseDecrement(num_tasks, 1.0, min_loss_ratio=0.0),
            estimator=SinglePoint(1e-3),
            seed=seed,
        )

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
    r"""MARIGOLD (Chen et al. 2026, "Feed m Birds with One Scone", Algorithm 1), the library's default.

    The task weights solve the bi-level problem

    .. math:: \min_{\lambda}\ R\big(f(\theta^k),\, f(A(\lambda, \theta^k))\big),
              \qquad \theta^{k+1} = A(\lambda, \theta^k),

    where ``A`` is one step of the user's own optimizer on :math:`\sum_i \lambda_i f_i`
    and ``R`` is the ``criterion`` (default: the worst-case decrement
    :math:`\max_{\rho\in\Delta}\sum_i\rho_i(f_i(A)-f_i(\theta))`, a min-max with a learned
    adversary ρ). :math:`\nabla_\lambda R` comes from the paper's single-point estimator
    :math:`\frac{m}{r} R(\lambda+ru)\,u`, the weights from the ``parametrization``
    (default :math:`\lambda=\mathrm{softmax}(\beta u/f)`), and the upper variables (u, and
    ρ's logits by ascent) from Adam with ``lr`` (see :class:`UpperLevel`).

    The real step *is* the look-ahead: the model is updated with the perturbed weights
    :math:`\lambda+ru` (what :meth:`weights` returns), the losses are measured again on
    the same batch after the step, and the upper update (:meth:`update`) applies from the
    next step. Works with any optimizer and in a loop you own: 2 forwards + 1 backward per
    step. :class:`MarigoldFaithful` is Algorithm 2 (a virtual look-ahead before the step).

    ``estimator``: a :class:`~bilevel_mtl.estimators.SinglePoint` with one direction (one
    evaluation per step); ``radius`` sets its ``r``.
    """

    name = "marigold"
    reference = "Chen et al. 2026, 'Feed m Birds with One Scone'"
    summary = "bi-level weights by zeroth-order hypergradients through the real (perturbed) step"
    needs = frozenset({"losses_after"})

    def __init__(self, num_tasks: int, **options: Any) -> None:
        if "mode" in options:
            raise TypeError(
                "Marigold has no mode argument since 0.2: Marigold(m) is the former mode='perturbed', "
                "MarigoldFaithful(m) the former mode='faithful' (the paper's Algorithm 2)"
            )
        super().__init__(num_tasks, **options)
        if not (isinstance(self.estimator, SinglePoint) and self.estimator.num_directions == 1):
            raise ValueError(
                "Marigold evaluates one perturbed step per iteration: it needs a SinglePoint "
                "estimator with num_directions=1; use MarigoldFaithful for other estimators"
            )

    @property
    def _single_point(self) -> SinglePoint:
        assert isinstance(self.estimator, SinglePoint)
        return self.estimator

    def _weights(self, losses: Tensor) -> Tensor:
        """The weights :math:`\\lambda + ru` of this step (``u`` from the generator, not advanced)."""
        lam: Tensor = self.parametrization(losses).detach()
        direction = self._single_point.sample(lam, forked(self.generator))
        return self._single_point.points(lam, direction)[0]

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> UpperReport:
        """The upper update from the losses after the perturbed step."""
        assert losses_after is not None
        lam: Tensor = self.parametrization(losses).detach()
        direction = self._single_point.sample(lam, self.generator)  # this step's u; advances
        with torch.enable_grad():  # the adversary's gradient, even under no_grad
            value = self.criterion(losses, losses_after.to(losses))
        hypergradient = self._single_point.combine(direction, value.detach()[None], lam)
        grads, report = self._upper_gradients(losses, hypergradient, [value])
        self._step(self.upper_optimizer, grads)
        return report


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
        objective = UpperObjective.lookahead(self.criterion, lower)
        lam = self.parametrization(before).detach()
        generator = forked(self.generator)
        estimate = self.estimator.estimate(objective, lam, generator)
        grads, report = self._upper_gradients(before, estimate.gradient, estimate.values)
        parametrization, criterion, optimizer = copy.deepcopy(
            (self.parametrization, self.criterion, self.upper_optimizer)
        )
        self._step(optimizer, grads)
        with torch.no_grad():
            weights = parametrization(before).detach()
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
