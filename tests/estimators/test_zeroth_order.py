"""Zeroth-order estimators: directions, perturbation spaces, common random numbers, input checks."""

from __future__ import annotations

import pytest
import torch
from _estimator_helpers import QuadraticObjective, lookahead_objective, mlp_problem, step_context
from torch import Tensor

from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import WorstCaseDecrement
from bilevel_mtl.estimators import (
    Exact,
    ForwardDifference,
    SinglePoint,
    TwoPoint,
    UpperObjective,
    project_tangent,
    sample_directions,
)

FAMILY = [SinglePoint, TwoPoint, ForwardDifference]


@pytest.mark.parametrize("kind", ["sphere", "tangent"])
def test_directions_are_unit_and_tangent_ones_sum_to_zero(kind: str) -> None:
    u = sample_directions(
        2000, 5, kind, torch.Generator().manual_seed(0), torch.zeros(5, dtype=torch.float64)
    )
    torch.testing.assert_close(u.norm(dim=1), torch.ones(2000, dtype=torch.float64))
    if kind == "tangent":
        torch.testing.assert_close(u.sum(dim=1), torch.zeros(2000, dtype=torch.float64), atol=1e-12, rtol=0)
    # isotropy: E[uuᵀ] = P/n, checked to sampling precision
    n, projector = (5, torch.eye(5)) if kind == "sphere" else (4, torch.eye(5) - 0.2)
    second = (u.T @ u / 2000).float()
    torch.testing.assert_close(second, projector / n, atol=0.03, rtol=0)


@pytest.mark.parametrize("estimator", [cls() for cls in FAMILY])
def test_evaluation_counts(estimator: SinglePoint) -> None:
    lam = torch.full((4,), 0.25, dtype=torch.float64)
    estimator.num_directions = 3
    u = estimator.sample(lam, torch.Generator().manual_seed(0))
    count = 3 * estimator.evaluations_per_direction + estimator.shared_evaluations
    assert estimator.points(lam, u).shape == (count, 4)


@pytest.mark.parametrize("cls", FAMILY)
def test_estimate_is_the_mean_of_the_per_direction_samples(cls: type[SinglePoint]) -> None:
    gen = torch.Generator().manual_seed(3)
    root = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    objective = QuadraticObjective(root + root.T, torch.randn(4, generator=gen, dtype=torch.float64), 1.0)
    lam = torch.softmax(torch.randn(4, generator=gen, dtype=torch.float64), dim=0)
    estimator = cls(radius=0.1, directions="tangent", num_directions=5)
    estimate = estimator.estimate(objective, lam, torch.Generator().manual_seed(7))
    u = estimator.sample(lam, torch.Generator().manual_seed(7))
    values = objective.evaluate(estimator.points(lam, u))
    samples = estimator.samples(u, values, lam)
    torch.testing.assert_close(estimate.gradient, samples.mean(dim=0))
    # It returns every value of Φ it evaluated, in the order of points().
    assert len(estimate.values) == 5 * cls.evaluations_per_direction + cls.shared_evaluations
    torch.testing.assert_close(torch.stack(estimate.values), values, rtol=0, atol=0)


def test_two_point_is_exact_along_its_direction_on_a_quadratic() -> None:
    """(n/2r)(Φ(λ+ru) − Φ(λ−ru)) u = n (aᵀu) u for any radius when Φ is quadratic."""
    gen = torch.Generator().manual_seed(1)
    root = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    objective = QuadraticObjective(root + root.T, torch.randn(3, generator=gen, dtype=torch.float64), -0.5)
    lam = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    estimator = TwoPoint(radius=0.7)
    u = estimator.sample(lam, gen)
    got = estimator.combine(u, objective.evaluate(estimator.points(lam, u)).detach())  # Φ stays attached to ρ
    torch.testing.assert_close(got, 3 * (objective.gradient(lam) @ u[0]) * u[0])


@pytest.mark.parametrize("space", ["logits", "log-weights"])
def test_log_space_estimates_pull_back_to_the_log_space_directional_derivative(space: str) -> None:
    """The returned y chains through softmax / exp into n (∇_z Φ · u) u (the log-space estimate)."""
    gen = torch.Generator().manual_seed(2)
    root = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    objective = QuadraticObjective(root + root.T, torch.randn(4, generator=gen, dtype=torch.float64), 0.1)
    lam = torch.softmax(torch.randn(4, generator=gen, dtype=torch.float64), dim=0)
    estimator = TwoPoint(radius=1e-5, directions="tangent", space=space)
    u = estimator.sample(lam, gen)
    y = estimator.combine(u, objective.evaluate(estimator.points(lam, u)), lam)

    z = lam.log().requires_grad_(True)
    weights = torch.softmax(z, dim=0) if space == "logits" else z.exp()
    (grad_z,) = torch.autograd.grad(objective(weights), z, retain_graph=True)
    expected = 3 * (grad_z @ u[0]) * u[0]
    (pulled_back,) = torch.autograd.grad(weights, z, grad_outputs=y)
    torch.testing.assert_close(pulled_back, expected, rtol=1e-6, atol=1e-9)
    if space == "logits":
        assert float(estimator.points(lam, u).sum(dim=1).sub(1).abs().max()) < 1e-12  # stays on the simplex


def test_common_random_numbers_under_dropout() -> None:
    """The ± evaluations see the step's own dropout masks: a small-radius two-point estimate
    equals n (∇Φ·u) u with ∇Φ from the exact reference; redrawn masks would swamp it."""
    model, opt, closure = mlp_problem(3, dropout=0.5, seed=4)
    context = step_context(model, opt, closure)
    torch.testing.assert_close(context.losses_at(), context.losses.detach(), rtol=0, atol=0)
    criterion = WorstCaseDecrement(3)
    objective = lookahead_objective(criterion, context)
    lam = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    exact = Exact().estimate(objective, lam, torch.Generator()).gradient
    estimator = TwoPoint(radius=1e-5)
    u = estimator.sample(lam, torch.Generator().manual_seed(0))
    got = estimator.combine(u, objective.evaluate(estimator.points(lam, u)).detach())  # Φ stays attached to ρ
    torch.testing.assert_close(got, 3 * (exact @ u[0]) * u[0], rtol=1e-4, atol=1e-9)

    # Negative control: the same evaluation with fresh masks at every call is off by orders of magnitude.
    lookahead = context.lookahead()

    def fresh_masks(w: Tensor) -> Tensor:
        params = lookahead.step(context.gradients(w)).params
        torch.rand(1)  # move the random stream on: the next forward draws other masks
        return StepContext.evaluate(model, opt, closure).losses_at(params)

    noisy = UpperObjective(criterion, context.losses, fresh_masks, context)
    bad = estimator.combine(u, noisy.evaluate(estimator.points(lam, u)).detach())
    assert float((bad - got).norm()) > 100 * float(got.norm())


@pytest.mark.parametrize("cls", FAMILY)
def test_bad_arguments_are_named(cls: type[SinglePoint]) -> None:
    with pytest.raises(ValueError, match="radius"):
        cls(radius=0.0)
    with pytest.raises(ValueError, match="directions"):
        cls(directions="ball")
    with pytest.raises(ValueError, match="space"):
        cls(space="probits")
    with pytest.raises(ValueError, match="num_directions"):
        cls(num_directions=0)
    with pytest.raises(ValueError, match="tangent directions need at least 2 tasks"):
        cls(directions="tangent").sample(torch.ones(1), torch.Generator())
    with pytest.raises(ValueError, match="weights > 0"):
        cls(space="logits").points(torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 0.0]]))
    u = torch.tensor([[1.0, 0.0]])
    count = cls.evaluations_per_direction + cls.shared_evaluations
    with pytest.raises(ValueError, match="unperturbed weights"):
        cls(space="logits").combine(u, torch.ones(count))
    with pytest.raises(ValueError, match="values of Φ"):
        cls().combine(u, torch.ones(count + 1))


def test_projection_on_the_tangent_space() -> None:
    v = torch.tensor([[1.0, 2.0, 6.0]])
    torch.testing.assert_close(project_tangent(v), torch.tensor([[-2.0, -1.0, 3.0]]))
