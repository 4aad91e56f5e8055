"""Every estimator with every criterion inside MarigoldFaithful() and BalancedOptimizer.step."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable

import pytest
import torch
from _estimator_helpers import mlp_problem

from bilevel_mtl import BalancedOptimizer, Marigold, MarigoldFaithful
from bilevel_mtl import estimators as estimators_module
from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import Criterion, FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from bilevel_mtl.estimators import (
    Estimator,
    Exact,
    ForwardDifference,
    Implicit,
    SinglePoint,
    TwoPoint,
    Unrolled,
    UpperObjective,
)
from bilevel_mtl.parametrizations import PositiveWeights
from bilevel_mtl.registry import estimator_classes

M = 3
ESTIMATORS: dict[str, Callable[[], Estimator]] = {
    "single-point": lambda: SinglePoint(),
    "single-point-tangent-logits": lambda: SinglePoint(directions="tangent", space="logits"),
    "two-point-tangent": lambda: TwoPoint(directions="tangent", num_directions=2),
    "forward-difference": lambda: ForwardDifference(radius=1e-2),
    "unrolled-1": lambda: Unrolled(1),
    "unrolled-2": lambda: Unrolled(2),
    "implicit-cg": lambda: Implicit("cg", ridge=1e-2, max_iter=5),
    "implicit-normal-cg": lambda: Implicit("normal_cg", ridge=1e-2, max_iter=5),
    "implicit-neumann": lambda: Implicit("neumann", ridge=1e-2, max_iter=5, power_iterations=3),
    "exact": lambda: Exact(),
}
CRITERIA: dict[str, Callable[[], Criterion]] = {
    "worst-case-learned": lambda: WorstCaseDecrement(M),
    "worst-case-max": lambda: WorstCaseDecrement(M, adversary="max"),
    "main-task": lambda: MainTaskLoss(M, main=0),
    "function": lambda: FunctionCriterion(lambda before, after: (after / before).sum()),
}


@pytest.mark.parametrize("criterion_name", list(CRITERIA))
@pytest.mark.parametrize("estimator_name", list(ESTIMATORS))
def test_marigold_trains_with_every_estimator_and_criterion(estimator_name: str, criterion_name: str) -> None:
    model, opt, closure = mlp_problem(M, dropout=0.1, seed=0, dtype=torch.float32, warm_steps=1)
    balancer = MarigoldFaithful(
        M,
        estimator=ESTIMATORS[estimator_name](),
        criterion=CRITERIA[criterion_name](),
        lr=0.05,
    )
    step = BalancedOptimizer(model, opt, balancer)
    before = [p.detach().clone() for p in model.parameters()]
    logits_before = balancer.parametrization.logits.detach().clone()
    for _ in range(3):
        record = step.step(closure)
        assert record.hypergradient is not None and record.hypergradient.shape == (M,)
        assert bool(torch.isfinite(record.hypergradient).all())
        assert record.criterion_value is not None and record.criterion_value.dim() == 0
        assert bool(torch.isfinite(record.criterion_value))
        assert float(record.weights.sum()) == pytest.approx(1.0, abs=1e-6) and bool(
            (record.weights > 0).all()
        )
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    assert not torch.equal(logits_before, balancer.parametrization.logits)  # the estimate reached the weights


def test_exact_and_unrolled_give_marigold_the_same_first_hypergradient() -> None:
    records = []
    for estimator in (Exact(), Unrolled(1)):
        model, opt, closure = mlp_problem(M, seed=1, dtype=torch.float64)
        balancer = MarigoldFaithful(M, estimator=estimator).double()
        records.append(BalancedOptimizer(model, opt, balancer).step(closure))
    torch.testing.assert_close(records[0].hypergradient, records[1].hypergradient)
    assert records[0].criterion_value is not None and records[1].criterion_value is not None
    assert float(records[0].criterion_value) == pytest.approx(float(records[1].criterion_value), rel=1e-12)


def test_perturbed_mode_perturbs_in_the_logits() -> None:
    model, opt, closure = mlp_problem(M, seed=2, dtype=torch.float32)
    balancer = Marigold(M, estimator=SinglePoint(radius=0.1, directions="tangent", space="logits"))
    step = BalancedOptimizer(model, opt, balancer)
    for _ in range(3):
        record = step.step(closure)
        assert float(record.weights.sum()) == pytest.approx(1.0, abs=1e-6)  # softmax(log λ + r u) stays on Δ
        assert record.hypergradient is not None and bool(torch.isfinite(record.hypergradient).all())


def test_log_weights_perturbation_for_positive_weights() -> None:
    model, opt, closure = mlp_problem(M, seed=3, dtype=torch.float32)
    balancer = MarigoldFaithful(
        M,
        parametrization=PositiveWeights(M, trainable=[False, True, True]),
        criterion=MainTaskLoss(M, main=0),
        estimator=TwoPoint(space="log-weights"),
        lr=0.05,
    )
    record = BalancedOptimizer(model, opt, balancer).step(closure)
    assert record.hypergradient is not None and bool(torch.isfinite(record.hypergradient).all())


@pytest.mark.parametrize(
    "estimator", [TwoPoint(directions="tangent"), TwoPoint(space="logits"), SinglePoint(directions="tangent")]
)
def test_simplex_only_estimates_are_refused_for_positive_weights(estimator: Estimator) -> None:
    with pytest.raises(ValueError, match="not on the simplex"):
        MarigoldFaithful(
            M,
            parametrization=PositiveWeights(M),
            criterion=MainTaskLoss(M),
            estimator=estimator,
        )


def test_perturbed_mode_still_needs_one_single_point_direction() -> None:
    with pytest.raises(ValueError, match="perturbed"):
        Marigold(M, estimator=TwoPoint())


def test_default_estimator_is_the_papers_in_both_modes() -> None:
    """The paper's single point with sphere directions and the given radius, whatever the mode."""
    for mode in (MarigoldFaithful, Marigold):
        estimator = mode(M, radius=0.01).estimator
        assert type(estimator) is SinglePoint and estimator.directions == "sphere"
        assert estimator.radius == 0.01 and estimator.num_directions == 1
    positive = MarigoldFaithful(M, parametrization=PositiveWeights(M), criterion=MainTaskLoss(M)).estimator
    assert type(positive) is SinglePoint and positive.directions == "sphere"


def test_every_registered_estimator_is_in_this_suite() -> None:
    """A new estimator class (exported, registered) must be added to ESTIMATORS above."""
    covered = {type(factory()) for factory in ESTIMATORS.values()}
    exported = [getattr(estimators_module, name) for name in estimators_module.__all__]
    concrete = {
        c for c in exported if inspect.isclass(c) and issubclass(c, Estimator) and not inspect.isabstract(c)
    }
    assert concrete == set(estimator_classes().values()), "an exported estimator is not registered"
    assert concrete <= covered, f"not in ESTIMATORS: {sorted(c.__name__ for c in concrete - covered)}"


def test_the_adversary_ascends_the_mean_criterion_over_every_evaluation() -> None:
    """MarigoldFaithful's adversary step is the gradient of the mean of the criterion values the
    estimator returns (here 2 directions × 2 evaluations), and the reported value is that mean."""
    model, opt, closure = mlp_problem(M, seed=4, dtype=torch.float64)
    estimator = TwoPoint(num_directions=2)
    balancer = MarigoldFaithful(
        M, estimator=estimator, upper_optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0)
    ).double()
    logits = balancer.criterion.rho.logits.detach().clone()
    context = StepContext.evaluate(model, opt, closure)
    lam = balancer.current_weights(context.losses)
    objective = UpperObjective.lookahead(balancer.criterion, context)
    estimate = estimator.estimate(objective, lam, copy.deepcopy(balancer.generator))
    assert len(estimate.values) == 4
    mean = torch.stack(estimate.values).mean()
    (ascent,) = torch.autograd.grad(mean, balancer.criterion.rho.logits)
    assert float(ascent.abs().max()) > 0

    decision = balancer.decide(context)
    assert torch.equal(balancer.criterion.rho.logits.detach(), logits)  # nothing applied yet
    assert decision.report is not None
    torch.testing.assert_close(decision.report.hypergradient, estimate.gradient, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(decision.report.criterion_value, mean.detach(), rtol=1e-10, atol=1e-14)
    balancer.commit(decision)
    torch.testing.assert_close(
        balancer.criterion.rho.logits.detach(), logits + ascent, rtol=1e-10, atol=1e-14
    )
