"""Unrolled and Exact: finite differences, gradcheck, closed forms, Adam facts (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from _estimator_helpers import (
    lookahead_objective,
    mlp_data,
    mlp_losses,
    mlp_problem,
    random_adversary,
    step_context,
)
from torch import Tensor

from bilevel_mtl.criteria import FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from bilevel_mtl.estimators import Exact, Unrolled, UpperObjective

LAM = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)


def objective_for(optimizer: str, seed: int = 0, dropout: float = 0.0) -> UpperObjective:
    model, opt, closure = mlp_problem(3, optimizer=optimizer, dropout=dropout, seed=seed)
    criterion = random_adversary(WorstCaseDecrement(3).double(), seed)
    return lookahead_objective(criterion, step_context(model, opt, closure))


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum", "rmsprop"])
def test_unrolled_equals_central_finite_differences(optimizer: str, steps: int) -> None:
    objective = objective_for(optimizer, dropout=0.3)
    estimator = Unrolled(steps=steps)
    grad = estimator.estimate(objective, LAM, torch.Generator()).gradient
    h = 1e-6
    fd = torch.stack(
        [
            (estimator.value(objective, LAM + h * e) - estimator.value(objective, LAM - h * e)) / (2 * h)
            for e in torch.eye(3, dtype=torch.float64)
        ]
    )
    torch.testing.assert_close(grad, fd.detach(), rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_unrolled_passes_gradcheck(optimizer: str, steps: int) -> None:
    objective = objective_for(optimizer, seed=1)
    estimator = Unrolled(steps=steps)
    lam = LAM.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: estimator.value(objective, w), (lam,))


@pytest.mark.parametrize("estimator", [Unrolled(1), Exact()])
def test_one_sgd_step_closed_form(estimator: Unrolled | Exact) -> None:
    """∂/∂λ_i f₀(θ − ηΣλ_j∇f_j) = −η ⟨∇f₀(θ'), ∇f_i(θ)⟩."""
    eta = 0.05
    model, opt, closure = mlp_problem(3, optimizer="sgd", lr=eta, seed=2)
    context = step_context(model, opt, closure)
    objective = lookahead_objective(MainTaskLoss(3, main=0).double(), context)
    got = estimator.estimate(objective, LAM, torch.Generator()).gradient

    x, y = mlp_data(3, seed=2)
    params = list(model.parameters())
    per_task = [torch.autograd.grad(mlp_losses(model, x, y)[i], params) for i in range(3)]
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p, *gs in zip(moved.parameters(), *per_task, strict=True):
            p -= eta * sum(w * g for w, g in zip(LAM, gs, strict=True))
    main_after = torch.autograd.grad(mlp_losses(moved, x, y)[0], list(moved.parameters()))
    expected = torch.stack(
        [-eta * sum((a * g).sum() for a, g in zip(main_after, per_task[i], strict=True)) for i in range(3)]
    )
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_one_fresh_adam_step_is_sign_like_so_its_hypergradient_is_nearly_zero() -> None:
    """From a fresh state, θ' = θ − η g/(s(g)+ε) with s(g) = √((1−β₂)g²+ε_root)/√(1−β₂): per
    coordinate a step of slope D = η(s+ε−g s')/(s+ε)², tiny where |g| ≫ ε, so
    ∂Φ/∂λ_i = −Σ_j ∇f₀(θ')_j D_j ∇f_i(θ)_j ≈ 0; and Φ(cλ) = Φ(λ) up to ε."""
    lr, eps_root = 1e-2, 1e-16
    model, opt, closure = mlp_problem(3, optimizer="adam", lr=lr, warm_steps=0, seed=0)
    x, y = mlp_data(3, seed=0)
    context = step_context(model, opt, closure)
    objective = lookahead_objective(MainTaskLoss(3, main=0).double(), context)
    got = Unrolled(1, eps_root=eps_root).estimate(objective, LAM, torch.Generator()).gradient

    params = list(model.parameters())
    per_task = [
        torch.cat([g.flatten() for g in torch.autograd.grad(mlp_losses(model, x, y)[i], params)])
        for i in range(3)
    ]
    g = sum(w * gi for w, gi in zip(LAM, per_task, strict=True))
    beta2, eps = opt.param_groups[0]["betas"][1], opt.param_groups[0]["eps"]
    root = torch.sqrt((1 - beta2) * g**2 + eps_root)
    s = root / (1 - beta2) ** 0.5
    ds = (1 - beta2) * g / ((1 - beta2) ** 0.5 * root)
    slope = lr * (s + eps - g * ds) / (s + eps) ** 2
    moved = copy.deepcopy(model)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(params) - lr * g / (s + eps), moved.parameters()
        )
    main_after = torch.cat(
        [a.flatten() for a in torch.autograd.grad(mlp_losses(moved, x, y)[0], list(moved.parameters()))]
    )
    expected = torch.stack([-(main_after * slope * per_task[i]).sum() for i in range(3)])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-15)

    sgd_model, sgd_opt, sgd_closure = mlp_problem(3, optimizer="sgd", lr=lr, warm_steps=0, seed=0)
    sgd = (
        Unrolled(1)
        .estimate(
            lookahead_objective(
                MainTaskLoss(3, main=0).double(), step_context(sgd_model, sgd_opt, sgd_closure)
            ),
            LAM,
            torch.Generator(),
        )
        .gradient
    )
    assert float(got.norm()) < 1e-2 * float(sgd.norm())  # ≈ 0: ε/g² ≪ 1 against SGD's unit slope
    phi = float(objective(LAM))
    for c in (0.5, 3.0):
        assert abs(float(objective(c * LAM)) - phi) <= 1e-6 * abs(phi)


def test_warm_adam_breaks_the_scale_invariance() -> None:
    """The negative control of the test above: with momentum from earlier steps, Φ(cλ) ≠ Φ(λ)."""
    model, opt, closure = mlp_problem(3, optimizer="adam", warm_steps=5, seed=0)
    objective = lookahead_objective(MainTaskLoss(3, main=0).double(), step_context(model, opt, closure))
    phi = float(objective(LAM))
    assert abs(float(objective(3.0 * LAM)) - phi) > 1e-4 * abs(phi)


def test_finite_when_some_coordinates_have_zero_gradient() -> None:
    """A dead input feature gives weights with zero gradient and zero Adam second moment:
    eps_root > 0 keeps the derivative of √v finite there; eps_root = 0 gives 0·∞ = NaN."""
    model, opt, _ = mlp_problem(3, optimizer="adam", warm_steps=0, seed=5)
    x, y = mlp_data(3, seed=5)
    x[:, 0] = 0.0

    def closure() -> Tensor:
        return mlp_losses(model, x, y)

    for _ in range(3):
        opt.zero_grad()
        closure().sum().backward()
        opt.step()
    objective = lookahead_objective(
        random_adversary(WorstCaseDecrement(3).double(), 5), step_context(model, opt, closure)
    )
    assert float(opt.state[model[0].weight]["exp_avg_sq"][:, 0].abs().max()) == 0.0
    h = 1e-6
    for estimator in (Unrolled(1), Unrolled(2), Exact()):
        grad = estimator.estimate(objective, LAM, torch.Generator()).gradient
        assert bool(torch.isfinite(grad).all()) and float(grad.norm()) > 0
        # ... and right: central differences of the same k-step objective.
        steps = estimator.steps if isinstance(estimator, Unrolled) else 1
        value = Unrolled(steps).value
        fd = torch.stack(
            [
                (value(objective, LAM + h * e) - value(objective, LAM - h * e)) / (2 * h)
                for e in torch.eye(3, dtype=torch.float64)
            ]
        )
        torch.testing.assert_close(grad, fd.detach(), rtol=1e-5, atol=1e-10)
    assert bool(
        torch.isnan(Unrolled(1, eps_root=0.0).estimate(objective, LAM, torch.Generator()).gradient).any()
    )


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd_momentum", "rmsprop"])
def test_exact_jacobian_matches_finite_differences_and_unrolled(optimizer: str) -> None:
    objective = objective_for(optimizer, seed=3, dropout=0.2)
    exact = Exact()
    after, jac = exact.jacobian(objective, LAM)
    h = 1e-6
    columns = [
        (objective.losses_after(LAM + h * e) - objective.losses_after(LAM - h * e)) / (2 * h)
        for e in torch.eye(3, dtype=torch.float64)
    ]
    torch.testing.assert_close(jac, torch.stack(columns, dim=1).detach(), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(after, objective.losses_after(LAM).detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        exact.estimate(objective, LAM, torch.Generator()).gradient,
        Unrolled(1).estimate(objective, LAM, torch.Generator()).gradient,
    )


@pytest.mark.parametrize(
    "criterion",
    [
        WorstCaseDecrement(3, adversary="max"),
        MainTaskLoss(3, main=[0, 2]),
        FunctionCriterion(lambda before, after: (after / before).log().sum()),
    ],
)
def test_exact_and_unrolled_agree_for_every_criterion(criterion: torch.nn.Module) -> None:
    model, opt, closure = mlp_problem(3, seed=6)
    objective = lookahead_objective(criterion.double(), step_context(model, opt, closure))  # type: ignore[arg-type]
    exact = Exact().estimate(objective, LAM, torch.Generator())
    unrolled = Unrolled(1).estimate(objective, LAM, torch.Generator())
    torch.testing.assert_close(unrolled.gradient, exact.gradient)
    # Each returns the criterion at its look-ahead: Φ(λ), one value.
    for estimate in (exact, unrolled):
        assert len(estimate.values) == 1
        torch.testing.assert_close(estimate.values[0], objective(LAM), rtol=1e-10, atol=1e-12)  # eps_root


def test_estimators_through_the_step_need_the_context() -> None:
    objective = UpperObjective(MainTaskLoss(2), torch.ones(2), lambda w: w, None)
    for estimator in (Unrolled(), Exact()):
        name = type(estimator).__name__
        with pytest.raises(ValueError, match=rf"{name} differentiates through.*UpperObjective\.lookahead"):
            estimator.estimate(objective, torch.full((2,), 0.5), torch.Generator())
    with pytest.raises(ValueError, match="steps"):
        Unrolled(steps=0)
    with pytest.raises(ValueError, match="eps_root"):
        Exact(eps_root=-1.0)


def test_the_lookahead_objective_helper_is_the_documented_composition() -> None:
    model, opt, closure = mlp_problem(3, dropout=0.3, seed=7)
    context = step_context(model, opt, closure)
    criterion = random_adversary(WorstCaseDecrement(3).double(), 7)
    mine, helper = lookahead_objective(criterion, context), UpperObjective.lookahead(criterion, context)
    logits = criterion.rho.logits
    for w in (LAM, torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64)):
        value, other = mine(w), helper(w)
        assert torch.equal(value.detach(), other.detach())
        # Attached to the adversary only (its gradient is the balancer's), never to the model.
        assert value.requires_grad and other.requires_grad
        (grad,), (other_grad,) = torch.autograd.grad(value, [logits]), torch.autograd.grad(other, [logits])
        assert torch.equal(grad, other_grad)
        assert all(p.grad is None for p in model.parameters())
