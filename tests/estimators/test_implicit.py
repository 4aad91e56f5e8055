"""Implicit differentiation against the closed-form bilevel quadratic (DESIGN §8).

Lower level: θ*(λ) = argmin Σλ_i ‖A_iθ − b_i‖²/(2n) + (ρ/2)‖θ‖²
           = (Σλ_i A_iᵀA_i/n + ρI)⁻¹ Σλ_i A_iᵀb_i/n.
Reference: autograd through that solve of R(f(θ*(λ₀)), f(θ*(λ))) at λ = λ₀.
"""

from __future__ import annotations

import pytest
import torch
from _estimator_helpers import lookahead_objective, random_adversary, step_context
from torch import Tensor, nn

from bilevel_mtl.criteria import Criterion, FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from bilevel_mtl.estimators import Implicit, UpperObjective

M, D, N = 3, 6, 30
LAM = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)


class SplitLinear(nn.Module):
    """θ stored as two parameters of different shapes (exercises flattening in the solver)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
        self.head = nn.Parameter(torch.zeros(D - 4, dtype=torch.float64))

    def theta(self) -> Tensor:
        return torch.cat([self.body.flatten(), self.head])

    def load(self, theta: Tensor) -> None:
        with torch.no_grad():
            self.body.copy_(theta[:4].view(2, 2))
            self.head.copy_(theta[4:])


class Quadratic:
    """Quadratic tasks f_i(θ) = ½θᵀQ_iθ − q_iᵀθ + k_i (least squares: Q_i = A_iᵀA_i/n, q_i = A_iᵀb_i/n)."""

    def __init__(self, seed: int, indefinite: bool = False) -> None:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(M, N, D, generator=gen, dtype=torch.float64)
        b = torch.randn(M, N, generator=gen, dtype=torch.float64)
        self.q_mat = a.transpose(1, 2) @ a / N
        if indefinite:
            self.q_mat = (
                self.q_mat
                - 1.2 * torch.eye(D, dtype=torch.float64) * self.q_mat.diagonal(dim1=1, dim2=2).mean()
            )
        self.q_vec = torch.einsum("ind,in->id", a, b) / N
        self.offset = (b**2).sum(dim=1) / (2 * N) + 1.0  # keeps every loss > 0

    def losses(self, theta: Tensor) -> Tensor:
        return 0.5 * torch.einsum("d,ide,e->i", theta, self.q_mat, theta) - self.q_vec @ theta + self.offset

    def solution(self, lam: Tensor, ridge: float) -> Tensor:
        hessian = torch.einsum("i,ide->de", lam, self.q_mat) + ridge * torch.eye(D, dtype=torch.float64)
        return torch.linalg.solve(hessian, lam @ self.q_vec)

    def reference(self, criterion: Criterion, lam: Tensor, ridge: float) -> Tensor:
        lam = lam.clone().requires_grad_(True)
        before = self.losses(self.solution(lam, ridge)).detach()
        value = criterion(before, self.losses(self.solution(lam, ridge)))
        (grad,) = torch.autograd.grad(value, lam)
        return grad

    def objective(self, criterion: Criterion, theta: Tensor) -> UpperObjective:
        model = SplitLinear()
        model.load(theta)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        return lookahead_objective(
            criterion, step_context(model, optimizer, lambda: self.losses(model.theta()))
        )


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
