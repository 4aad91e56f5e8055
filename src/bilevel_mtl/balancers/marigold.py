"""MARIGOLD: multi-task balancing as a bi-level problem with zeroth-order hypergradients."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from ..context import StepContext
from ..criteria import Criterion, WorstCaseDecrement
from ..estimators import Estimator, SinglePoint, UpperObjective, ZerothOrder
from ..parametrizations import Parametrization, ScaledSoftmax
from .base import Balancer, BalancerOutput, UpperUpdate

MODES = ("faithful", "perturbed")
UpperOptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


class Marigold(Balancer):
    r"""MARIGOLD (Chen et al. 2026, "Feed m Birds with One Scone", Algorithms 1–2).

    The task weights solve the bi-level problem

    .. math:: \min_{\lambda}\ R\big(f(\theta^k),\, f(A(\lambda, \theta^k))\big),
              \qquad \theta^{k+1} = A(\lambda, \theta^k),

    where ``A`` is one step of the user's own optimizer on :math:`\sum_i \lambda_i f_i`
    and ``R`` is the ``criterion`` (default: the worst-case decrement
    :math:`\max_{\rho\in\Delta}\sum_i\rho_i(f_i(A)-f_i(\theta))`, a min-max with a learned
    adversary ρ). :math:`\nabla_\lambda R` comes from the ``estimator``, the weights from
    the ``parametrization`` (default :math:`\lambda=\mathrm{softmax}(\beta u/f)`), and
    the upper variables (u, and ρ's logits by ascent) from Adam with ``lr``.
    β = 1, r = 1e-3 and upper Adam lr 1e-4 are the paper's Appendix C.

    Default estimator, in both modes: the paper's single-point estimator
    :math:`\frac{m}{r} R(\lambda+ru)\,u` (:class:`~bilevel_mtl.estimators.SinglePoint`).
    Far more accurate estimators exist (``estimator=TwoPoint(directions="tangent")`` has a
    per-step spread 360–29 000 times smaller for one more look-ahead, see
    ``docs/estimators.md``), but on the demo problem an accurate hypergradient of this
    one-step criterion did not train a better model than the noisy one (``docs/marigold.md``),
    so the default stays the paper's and the cheaper.

    Modes (costs per step against LS's one forward + one backward; the default,
    ``"perturbed"``, matched the faithful mode's quality at 0.72× its cost on the demo
    problem, see ``docs/marigold.md``):

    * ``"faithful"`` — Algorithm 2: a *virtual* look-ahead :math:`A(\lambda+ru,\theta)`
      replicated from the optimizer's warm state (one backward, one forward), the
      upper update, then the real step with the new weights (one more backward).
      Needs :class:`~bilevel_mtl.BalancedOptimizer` and a supported ``torch.optim``
      optimizer. 2 forwards + 2 backwards (one more of each per extra evaluation of
      other estimators, e.g. 3 + 3 with ``TwoPoint``).
    * ``"perturbed"`` — the real step *is* the look-ahead: the model is updated with
      the perturbed weights :math:`\lambda+ru`, the losses are measured again on the
      same batch (:meth:`observe`), and the upper update applies from the next step.
      Works with any optimizer and in a loop you own. 2 forwards + 1 backward;
      single-point estimators only (one evaluation per step).
    """

    def __init__(
        self,
        num_tasks: int,
        *,
        mode: str = "perturbed",
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
            raise ValueError("Marigold balances at least 2 tasks")
        self.mode = check_choice("mode", mode, MODES)
        beta = check_positive("beta", beta)
        self.lr = check_positive("lr", lr)
        self.parametrization = parametrization or ScaledSoftmax(num_tasks, beta)
        self.criterion = criterion or WorstCaseDecrement(num_tasks, beta)
        self.estimator = estimator or SinglePoint(radius)
        if self.parametrization.num_tasks != num_tasks:
            raise ValueError(
                f"parametrization is for {self.parametrization.num_tasks} tasks, not {num_tasks}"
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
        if self.mode == "perturbed" and not (
            isinstance(self.estimator, SinglePoint) and self.estimator.num_directions == 1
        ):
            raise ValueError(
                "mode='perturbed' evaluates one perturbed step per iteration: it needs a "
                "SinglePoint estimator with num_directions=1; use mode='faithful' for others"
            )
        self.needs_losses_after = self.mode == "perturbed"
        self.generator = torch.Generator().manual_seed(seed)
        factory = upper_optimizer or (lambda groups: torch.optim.Adam(groups, lr=self.lr))
        self.upper_optimizer = factory(self._upper_groups())
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None

    def _upper_groups(self) -> list[dict[str, Any]]:
        def trainable(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
            return [p for p in params if p.requires_grad]

        groups: list[dict[str, Any]] = [{"params": trainable(self.parametrization.parameters())}]
        adversary = trainable(self.criterion.parameters())
        if adversary:
            groups.append({"params": adversary, "maximize": self.criterion.maximize_parameters})
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("neither the parametrization nor the criterion has trainable parameters")
        return groups

    def weights(self, losses: Tensor) -> Tensor:
        """Perturbed mode: the weights :math:`\\lambda + ru` of this step (remembers ``u``)."""
        if self.mode != "perturbed":
            raise RuntimeError(
                "Marigold(mode='faithful') needs the virtual look-ahead: train with "
                "bilevel_mtl.BalancedOptimizer, or use mode='perturbed' in your own loop"
            )
        before = self.check_losses(losses).detach()
        lam: Tensor = self.parametrization(before).detach()
        assert isinstance(self.estimator, SinglePoint)
        direction = self.estimator.sample(lam, self.generator)
        self._pending = (before, direction, lam)
        return self.estimator.points(lam, direction)[0]

    def observe(self, losses_after: Tensor) -> UpperUpdate:
        """Perturbed mode: the upper update from the losses after the perturbed step."""
        if self._pending is None:
            raise RuntimeError("observe() must follow weights() of the same step")
        before, direction, lam = self._pending
        after = self.check_losses(losses_after).detach().to(before)
        with torch.enable_grad():  # the adversary's gradient, even under no_grad
            value = self.criterion(before, after)
        assert isinstance(self.estimator, SinglePoint)
        hypergradient = self.estimator.combine(direction, value.detach()[None], lam)
        update = self._upper_step(before, hypergradient, [value])
        self._pending = None
        return update

    def backward(self, losses: Tensor, context: StepContext) -> BalancerOutput:
        if self.mode == "perturbed":
            return super().backward(losses, context)
        before = losses.detach()
        objective = UpperObjective.lookahead(self.criterion, context)
        lam = self.parametrization(before).detach()
        hypergradient = self.estimator.estimate(objective, lam, self.generator)
        update = self._upper_step(before, hypergradient, objective.evaluations)
        weights = self.parametrization(before).detach().to(losses)
        torch.autograd.backward(torch.dot(weights, losses))
        return BalancerOutput(weights=weights, upper=update)

    def discard_step(self) -> None:
        self._pending = None

    def _upper_step(self, before: Tensor, hypergradient: Tensor, values: list[Tensor]) -> UpperUpdate:
        """Chain ``hypergradient`` through the parametrization, add the adversary's gradient, step."""
        self.upper_optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():  # observe() is often called under no_grad
            lam = self.parametrization(before)
            value = torch.stack([v.reshape(()) for v in values]).mean()
            outputs, grads = [lam], [hypergradient.to(lam)]
            if value.requires_grad:
                outputs.append(value)
                grads.append(torch.ones_like(value))
            torch.autograd.backward(outputs, grads)
        self.upper_optimizer.step()
        return UpperUpdate(hypergradient=hypergradient.detach(), criterion_value=float(value.detach()))

    def current_weights(self, losses: Tensor) -> Tensor:
        """The unperturbed weights λ the parametrization gives for ``losses`` (no side effect)."""
        with torch.no_grad():
            weights: Tensor = self.parametrization(self.check_losses(losses).detach())
        return weights

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "upper_optimizer": self.upper_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.upper_optimizer.load_state_dict(state["upper_optimizer"])
        self.generator.set_state(state["generator"])
