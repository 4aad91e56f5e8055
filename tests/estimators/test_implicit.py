"""Implicit differentiation against the closed-form bilevel quadratic (DESIGN §8).

Lower level: θ*(λ) = argmin Σλ_i ‖A_iθ − b_i‖²/(2n) + (ρ/2)‖θ‖²
           = (Σλ_i A_iᵀA_i/n + ρI)⁻¹ Σλ_i A_iᵀb_i/n.
Reference: autograd through that solve of R(f(θ*(λ₀)), f(θ*(λ))) at λ = λ₀.
"""

from __future__ import annotations

import pytest
import torch
from _estimator_helpers import D, Quadratic, random_adversary

from bilevel_mtl.criteria import FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from bilevel_mtl.estimators import Implicit, UpperObjective

M = 3
LAM = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)


CRITERIA = {
    "worst-case": lambda: random_adversary(WorstCaseDecrement(M).double(), 0),
    "main-task": lambda: MainTaskLoss(M, main=1).double(),
    "function": lambda: FunctionCriterion(
        lambda before, after: (after / before).log().sum() + (after**2).sum()
    ),
}
SOLVERS = {
    "cg": {"solver": "cg"},
    "normal_cg": {"solver": "normal_cg"},
    "neumann": {"solver": "neumann", "max_iter": 3000},
}


@pytest.mark.parametrize("ridge", [0.0, 0.3])
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("criterion_name", list(CRITERIA))
def test_matches_the_closed_form_hypergradient(criterion_name: str, solver: str, ridge: float) -> None:
    problem = Quadratic(seed=1)
    criterion = CRITERIA[criterion_name]()
    objective = problem.objective(criterion, problem.solution(LAM, ridge))
    options = {"max_iter": 200, "tol": 1e-13, **SOLVERS[solver]}
    estimator = Implicit(ridge=ridge, **options)  # type: ignore[arg-type]
    estimate = estimator.estimate(objective, LAM, torch.Generator())
    torch.testing.assert_close(
        estimate.gradient, problem.reference(criterion, LAM, ridge), rtol=1e-7, atol=1e-10
    )
    assert estimator.last_solve is not None
    # One evaluation of Φ at the real look-ahead, attached to the adversary's parameters (if any).
    assert len(estimate.values) == 1
    torch.testing.assert_close(estimate.values[0], objective(LAM), rtol=0, atol=0)
    assert estimate.values[0].requires_grad == any(p.requires_grad for p in criterion.parameters())


def test_normal_cg_is_exact_at_a_saddle_point() -> None:
    """Indefinite Σλ_iQ_i: θ* is a saddle, the IFT still holds; CG on the normal equations solves it."""
    problem = Quadratic(seed=2, indefinite=True)
    hessian = torch.einsum("i,ide->de", LAM, problem.q_mat)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert float(eigenvalues.min()) < 0 < float(eigenvalues.max())
    criterion = MainTaskLoss(M, main=0).double()
    objective = problem.objective(criterion, problem.solution(LAM, 0.0))
    normal = Implicit("normal_cg", max_iter=400, tol=1e-14)
    got = normal.estimate(objective, LAM, torch.Generator()).gradient
    torch.testing.assert_close(got, problem.reference(criterion, LAM, 0.0), rtol=1e-6, atol=1e-9)
    assert normal.last_solve is not None and not normal.last_solve.breakdown
    plain = Implicit("cg", max_iter=400, tol=1e-14)
    plain.estimate(objective, LAM, torch.Generator())
    assert plain.last_solve is not None and plain.last_solve.breakdown  # CG is not for saddles


def test_error_away_from_the_optimum_grows_linearly() -> None:
    """At θ* + tδ the estimate uses J, v of the wrong point: for quadratics the error is
    t·e₁ + t²·e₂, so it vanishes at the optimum and doubles when t doubles (graceful)."""
    problem = Quadratic(seed=3)
    criterion = MainTaskLoss(M, main=0).double()
    optimum = problem.solution(LAM, 0.1)
    reference = problem.reference(criterion, LAM, 0.1)
    delta = torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(t: float) -> float:
        objective = problem.objective(criterion, optimum + t * delta)
        got = (
            Implicit("cg", ridge=0.1, max_iter=100, tol=1e-13)
            .estimate(objective, LAM, torch.Generator())
            .gradient
        )
        return float((got - reference).norm())

    small, double = error(1e-4), error(2e-4)
    assert error(0.0) < 1e-10 < small
    assert 1.9 < double / small < 2.1


def test_truncated_solves_stop_at_max_iter() -> None:
    problem = Quadratic(seed=4)
    objective = problem.objective(MainTaskLoss(M).double(), problem.solution(LAM, 0.0))
    estimator = Implicit("cg", max_iter=2, tol=0.0)
    grad = estimator.estimate(objective, LAM, torch.Generator()).gradient
    assert bool(torch.isfinite(grad).all())
    assert estimator.last_solve is not None and estimator.last_solve.iterations == 2
    assert estimator.last_solve.relative_residual > 1e-6  # D = 6 > 2 iterations: not converged
    # The truncated estimate is −J x₂, x₂ the second CG iterate (x₀ = 0) on H x = v, H = Σλ_iQ_i,
    # v = ∇f₀(θ) (MainTaskLoss: c = e₀), J's rows the task gradients ∇f_i(θ) = Q_iθ − q_i.
    theta = problem.solution(LAM, 0.0)
    task_grads = torch.einsum("ide,e->id", problem.q_mat, theta) - problem.q_vec
    hessian = torch.einsum("i,ide->de", LAM, problem.q_mat)
    x, r = torch.zeros(D, dtype=torch.float64), task_grads[0].clone()
    p = r.clone()
    for _ in range(2):
        alpha = (r @ r) / (p @ hessian @ p)
        x, r_new = x + alpha * p, r - alpha * hessian @ p
        p, r = r_new + (r_new @ r_new) / (r @ r) * p, r_new
    torch.testing.assert_close(grad, -task_grads @ x, rtol=1e-9, atol=1e-13)
    exact = -task_grads @ torch.linalg.solve(hessian, task_grads[0])
    assert float((grad - exact).norm()) > 1e-6 * float(exact.norm())  # and it is not the full solve


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="solver"):
        Implicit("lu")
    with pytest.raises(ValueError, match="ridge"):
        Implicit(ridge=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        Implicit(max_iter=0)
    with pytest.raises(ValueError, match="alpha"):
        Implicit("neumann", alpha=0.0)
    # Without the lower level the error says how to build an objective that has it.
    with pytest.raises(ValueError, match=r"Implicit differentiates through.*UpperObjective\.lookahead"):
        Implicit().estimate(
            UpperObjective(MainTaskLoss(2), torch.ones(2), lambda w: w), torch.ones(2) / 2, torch.Generator()
        )
