"""Every estimator with every criterion inside MarigoldFaithful() and BalancedOptimizer.step.

The tests below write the training step out independently (flat θ, autograd, no library code:
:class:`Lower`) and check that the pipeline produces the right numbers:

* deterministic estimators (Exact, Unrolled) return ∇Φ of the step's own look-ahead, by autograd
  through a hand-written SGD or Adam step from the optimizer's warm state (float64, ~1e-9);
* Implicit returns the closed-form bi-level hypergradient at θ = θ*(λ) (quadratic lower level);
* zeroth-order estimators return exactly their formula at the exact values of Φ for the
  directions the balancer drew, average to P∇Φ_r (P the directions' projector, Φ_r the
  ball-smoothed Φ; the exact P∇Φ where Φ is quadratic) within 4 standard errors, and, where Φ
  is quadratic, spread as the closed forms of DESIGN §5 say;
* the upper update, with an SGD upper optimizer, is Δu = −lr (∂λ/∂u)ᵀ ĝ for the weights'
  parametrization and gradient *ascent* on the mean criterion of the evaluations for the
  adversary; the real step then takes the user's optimizer step with the new λ.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _estimator_helpers import Quadratic, SplitLinear, closed_form, mlp_data, mlp_problem
from torch import Tensor, nn
from torch.func import functional_call

from bilevel_mtl import BalancedOptimizer, Marigold, MarigoldFaithful, StepRecord
from bilevel_mtl import estimators as estimators_module
from bilevel_mtl.balancers import UpperLevel
from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import Criterion, FunctionCriterion, LogDecrement, MainTaskLoss, WorstCaseDecrement
from bilevel_mtl.estimators import (
    Estimator,
    Exact,
    FirstOrder,
    ForwardDifference,
    Implicit,
    SinglePoint,
    TwoPoint,
    Unrolled,
    UpperObjective,
    ZerothOrder,
)
from bilevel_mtl.parametrizations import Parametrization, PositiveWeights
from bilevel_mtl.registry import estimator_classes

M = 3
F64 = torch.float64
ETA = 0.05  # the lower optimizer's learning rate
UPPER_LR = 0.3  # the SGD upper optimizer's
BETA = 1.0  # ScaledSoftmax's and the learned adversary's β (Marigold's default)
START_LOGITS = torch.tensor([0.4, -0.3, 0.1], dtype=F64)  # u: non-uniform λ = softmax(βu/f)
ADVERSARY_LOGITS = torch.tensor([-0.2, 0.5, 0.1], dtype=F64)  # v: ρ = softmax(βv/f)
LAM = torch.tensor([0.5, 0.2, 0.3], dtype=F64)  # the weights of the quadratic problem's tests
RIDGE = 0.3


# ---- How a MARIGOLD step is built and read (the only code here that knows the API) ----


def marigold(
    estimator: Estimator,
    criterion: Criterion,
    *,
    mode: type[UpperLevel] = MarigoldFaithful,
    logits: Tensor | None = START_LOGITS,
    parametrization: Parametrization | None = None,
    upper_lr: float = UPPER_LR,
    seed: int = 0,
) -> UpperLevel:
    """MARIGOLD (``mode``: MarigoldFaithful or Marigold) in float64 with an SGD upper optimizer and
    the given start (Marigold: the paper's configuration, perturbed and measured on the same batch)."""
    build = Marigold.paper if mode is Marigold else mode
    balancer = build(
        M,
        estimator=estimator,
        criterion=criterion,
        parametrization=parametrization,
        upper_optimizer=lambda groups: torch.optim.SGD(groups, lr=upper_lr),
        seed=seed,
    ).double()
    with torch.no_grad():
        if logits is not None:
            balancer.parametrization.get_parameter("logits").copy_(logits)
        for p in balancer.criterion.parameters():
            p.copy_(ADVERSARY_LOGITS)
    return balancer


def upper_variables(balancer: UpperLevel) -> tuple[Tensor, Tensor | None]:
    """(the parametrization's variables, the adversary's logits or None), detached copies."""
    (u,) = [p.detach().clone() for p in balancer.parametrization.parameters()]
    adversary = [p.detach().clone() for p in balancer.criterion.parameters()]
    return u, (adversary[0] if adversary else None)


def next_directions(balancer: UpperLevel, lam: Tensor) -> Tensor:
    """The directions the balancer's next zeroth-order estimate at ``lam`` will draw."""
    generator = torch.Generator().manual_seed(0)
    generator.set_state(balancer.generator.get_state())
    assert isinstance(balancer.estimator, ZerothOrder)
    return balancer.estimator.sample(lam, generator)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, balancer: UpperLevel, closure: Callable[[], Tensor]
) -> StepRecord:
    return BalancedOptimizer(model, optimizer, balancer).step(closure)


# ---- Criteria: the library's object and the same function written out, R(before, after, v) ----


def log_ratio(before: Tensor, after: Tensor) -> Tensor:
    return (after / before).log().sum(-1)


CriterionFormula = Callable[[Tensor, Tensor, Tensor | None], Tensor]
CRITERIA: dict[str, tuple[Callable[[], Criterion], CriterionFormula]] = {
    "worst-case-learned": (
        lambda: WorstCaseDecrement(M, beta=BETA),
        lambda b, a, v: (a - b) @ torch.softmax(BETA * v / b, 0),  # type: ignore[operator]
    ),
    "worst-case-max": (lambda: WorstCaseDecrement(M, adversary="max"), lambda b, a, v: (a - b).amax(-1)),
    "main-task": (lambda: MainTaskLoss(M, main=0), lambda b, a, v: a[..., 0] - b[..., 0]),
    "function": (lambda: FunctionCriterion(log_ratio), lambda b, a, v: log_ratio(b, a)),
}


# ---- The lower level written out ----

Rule = Callable[[Tensor, Tensor, Any], tuple[Tensor, Any]]


def flat(tensors: Any) -> Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def sgd_rule(lr: float) -> Rule:
    return lambda theta, grad, state: (theta - lr * grad, state)


def adam_rule(optimizer: torch.optim.Optimizer) -> tuple[Rule, Any]:
    """Adam from the optimizer's warm state: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
    θ ← θ − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)."""
    (group,) = optimizer.param_groups
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    state = [optimizer.state[p] for p in group["params"]]

    def rule(theta: Tensor, grad: Tensor, s: Any) -> tuple[Tensor, Any]:
        m, v, t = s
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        t = t + 1
        step = lr / (1 - beta1**t) * m / (v.sqrt() / math.sqrt(1 - beta2**t) + eps)
        return theta - step, (m, v, t)

    start = (flat(s["exp_avg"] for s in state), flat(s["exp_avg_sq"] for s in state), float(state[0]["step"]))
    return rule, start


@dataclass
class Lower:
    """One training step: flat parameters θ, the task losses f(θ) and the optimizer's rule."""

    theta: Tensor
    losses: Callable[[Tensor], Tensor]
    rule: Rule
    state: Any = None

    def after(self, w: Tensor, steps: int = 1) -> Tensor:
        """θ_k(w): ``steps`` steps of the rule on wᵀf from θ (differentiable in ``w``)."""
        theta, state = self.theta.detach().requires_grad_(True), self.state
        with torch.enable_grad():
            for _ in range(steps):
                (grad,) = torch.autograd.grad(w @ self.losses(theta), theta, create_graph=True)
                theta, state = self.rule(theta, grad, state)
        return theta

    def phi(self, formula: CriterionFormula, v: Tensor | None, w: Tensor, steps: int = 1) -> Tensor:
        """Φ(w) = R(f(θ), f(θ_k(w)))."""
        return formula(self.losses(self.theta), self.losses(self.after(w, steps)), v)

    def hypergradient(
        self, formula: CriterionFormula, v: Tensor | None, lam: Tensor, steps: int = 1
    ) -> Tensor:
        w = lam.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.phi(formula, v, w, steps), w)
        return grad

    def jacobian(self) -> Tensor:
        """G(θ), the ``[m, d]`` task gradients."""
        return torch.autograd.functional.jacobian(self.losses, self.theta)

    def sgd_losses(self, points: Tensor) -> Tensor:
        """f(θ − η Gᵀw) at each row w of ``points`` (the SGD look-ahead, ∇wᵀf = Gᵀw), ``[p, m]``."""
        return self.losses(self.theta - ETA * points @ self.jacobian())


def mlp_lower(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> Lower:
    """The :func:`mlp_problem` step (float64, no dropout), with SGD or Adam as the optimizer has."""
    x, y = mlp_data(M, seed)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def losses(theta: Tensor) -> Tensor:
        parts = torch.split(theta, [math.prod(s) for s in shapes])
        tensors = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        out: Tensor = functional_call(model, tensors, (x,))
        return ((out - y) ** 2).mean(0)

    theta = flat(model.parameters())
    if isinstance(optimizer, torch.optim.Adam):
        rule, state = adam_rule(optimizer)
        return Lower(theta, losses, rule, state)
    return Lower(theta, losses, sgd_rule(optimizer.param_groups[0]["lr"]))


def quadratic_problem(
    lam: Tensor, seed: int = 5
) -> tuple[Quadratic, SplitLinear, torch.optim.Optimizer, Callable[[], Tensor], Lower, Tensor]:
    """Quadratic tasks at θ*(λ) (ridge ρ), SGD(η), and the logits u with softmax(βu/f(θ)) = λ."""
    problem = Quadratic(seed)
    theta = problem.solution(lam, RIDGE)
    model = SplitLinear()
    model.load(theta)
    optimizer = torch.optim.SGD(model.parameters(), lr=ETA)

    def closure() -> Tensor:
        return problem.losses(model.theta())

    lower = Lower(theta, problem.losses, sgd_rule(ETA))
    logits = problem.losses(theta) * lam.log() / BETA
    return problem, model, optimizer, closure, lower, logits


# ---- The upper update written out ----


def softmax_vjp(p: Tensor, g: Tensor) -> Tensor:
    """(∂softmax/∂z)ᵀ g = p ⊙ (g − pᵀg)."""
    return p * (g - p @ g)


def assert_upper_update(
    balancer: UpperLevel, u: Tensor, v: Tensor | None, before: Tensor, estimate: Tensor, decrements: Tensor
) -> Tensor:
    """λ = softmax(βu/f): u' = u − lr (β/f) ⊙ softmax_vjp(λ, ĝ); the learned adversary ρ = softmax(βv/f)
    ascends the mean over the evaluations of ρᵀ(f' − f): v' = v + lr (β/f) ⊙ softmax_vjp(ρ, mean d).
    Returns u'."""
    new_u, new_v = upper_variables(balancer)
    lam = torch.softmax(BETA * u / before, 0)
    expected_u = u - UPPER_LR * BETA / before * softmax_vjp(lam, estimate)
    torch.testing.assert_close(new_u, expected_u, rtol=1e-12, atol=1e-14)
    assert (v is None) == (new_v is None)
    if v is not None:
        rho = torch.softmax(BETA * v / before, 0)
        expected_v = v + UPPER_LR * BETA / before * softmax_vjp(rho, decrements.mean(0))
        torch.testing.assert_close(new_v, expected_v, rtol=1e-10, atol=1e-14)
    return new_u


# ---- Deterministic estimators: the exact hypergradient of the step ----

DETERMINISTIC: dict[str, tuple[Callable[[], Estimator], int]] = {
    "exact": (Exact, 1),
    "unrolled-1": (lambda: Unrolled(1), 1),
    "unrolled-2": (lambda: Unrolled(2), 2),
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("criterion_name", list(CRITERIA))
@pytest.mark.parametrize("estimator_name", list(DETERMINISTIC))
def test_deterministic_estimators_give_the_exact_hypergradient_and_its_upper_update(
    estimator_name: str, criterion_name: str, optimizer: str
) -> None:
    build, steps = DETERMINISTIC[estimator_name]
    make_criterion, formula = CRITERIA[criterion_name]
    model, opt, closure = mlp_problem(M, optimizer=optimizer, lr=ETA, seed=4)
    lower = mlp_lower(model, opt, seed=4)
    balancer = marigold(build(), make_criterion())
    u, v = upper_variables(balancer)
    record = train_step(model, opt, balancer, closure)

    before = lower.losses(lower.theta)
    lam = torch.softmax(BETA * u / before, 0)
    assert record.hypergradient is not None and record.criterion_value is not None
    expected = lower.hypergradient(formula, v, lam, steps)
    torch.testing.assert_close(record.hypergradient, expected, rtol=1e-9, atol=1e-13)
    after = lower.losses(lower.after(lam, steps)).detach()
    assert float(record.criterion_value) == pytest.approx(
        float(formula(before, after, v)), rel=1e-10, abs=1e-15
    )

    new_u = assert_upper_update(balancer, u, v, before, record.hypergradient, (after - before)[None])
    # The real step: the user's optimizer on the new weights' λᵀf.
    new_lam = torch.softmax(BETA * new_u / before, 0)
    torch.testing.assert_close(record.weights, new_lam, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        flat(model.parameters()), lower.after(new_lam).detach(), rtol=1e-10, atol=1e-13
    )


def test_one_sgd_step_hypergradient_is_the_closed_form_inner_product() -> None:
    """The reference itself: ∂/∂λ_i f₀(θ − ηΣλ_j∇f_j) = −η⟨∇f₀(θ'), ∇f_i(θ)⟩ (DESIGN)."""
    model, opt, _ = mlp_problem(M, optimizer="sgd", lr=ETA, seed=4)
    lower = mlp_lower(model, opt, seed=4)
    _, formula = CRITERIA["main-task"]
    after = lower.after(LAM).detach()
    main_after = torch.autograd.functional.jacobian(lower.losses, after)[0]
    torch.testing.assert_close(
        lower.hypergradient(formula, None, LAM), -ETA * lower.jacobian() @ main_after, rtol=1e-12, atol=1e-15
    )


# ---- Implicit: the closed-form bi-level hypergradient where the IFT assumption holds ----


@pytest.mark.parametrize("criterion_name", list(CRITERIA))
@pytest.mark.parametrize(
    "options",
    [{"solver": "cg"}, {"solver": "normal_cg"}, {"solver": "neumann", "max_iter": 3000}],
    ids=["cg", "normal_cg", "neumann"],
)
def test_implicit_gives_the_closed_form_bilevel_hypergradient_at_the_optimum(
    options: dict[str, Any], criterion_name: str
) -> None:
    """θ = θ*(λ) = (Σλ_iQ_i + ρI)⁻¹Σλ_iq_i; reference: autograd through that solve of
    R(f(θ*(λ₀)), f(θ*(λ))). The worst-case max is at a tie there (f(θ*) − f(θ*) = 0): both
    sides take the mean of the tied gradients."""
    make_criterion, formula = CRITERIA[criterion_name]
    problem, model, opt, closure, lower, logits = quadratic_problem(LAM)
    estimator = Implicit(ridge=RIDGE, **{"max_iter": 200, "tol": 1e-13, **options})
    balancer = marigold(estimator, make_criterion(), logits=logits)
    u, v = upper_variables(balancer)
    record = train_step(model, opt, balancer, closure)

    before = lower.losses(lower.theta)
    torch.testing.assert_close(torch.softmax(BETA * u / before, 0), LAM)
    assert record.hypergradient is not None and record.criterion_value is not None
    reference = problem.reference(FunctionCriterion(lambda b, a: formula(b, a, v)), LAM, RIDGE)
    torch.testing.assert_close(record.hypergradient, reference, rtol=1e-7, atol=1e-10)
    # Its scale is not the one-step Φ's (it is the long-horizon limit), its criterion value is.
    after = lower.sgd_losses(LAM[None])
    assert float(record.criterion_value) == pytest.approx(float(formula(before, after[0], v)), rel=1e-10)
    new_u = assert_upper_update(balancer, u, v, before, record.hypergradient, after - before)
    new_lam = torch.softmax(BETA * new_u / before, 0)
    torch.testing.assert_close(model.theta().detach(), lower.after(new_lam).detach(), rtol=1e-12, atol=1e-14)


# ---- Zeroth-order estimators: their formula at the exact Φ, unbiased, closed-form spread ----

ZEROTH_ORDER: dict[str, tuple[type[ZerothOrder], dict[str, Any]]] = {
    "single-point": (SinglePoint, {"radius": 1.0}),
    "single-point-tangent": (SinglePoint, {"radius": 1.0, "directions": "tangent"}),
    "single-point-tangent-logits": (SinglePoint, {"radius": 0.3, "directions": "tangent", "space": "logits"}),
    "two-point": (TwoPoint, {"radius": 0.1}),
    "two-point-tangent": (TwoPoint, {"radius": 0.1, "directions": "tangent"}),
    "two-point-tangent-logits": (TwoPoint, {"radius": 0.05, "directions": "tangent", "space": "logits"}),
    "two-point-logits": (TwoPoint, {"radius": 0.05, "space": "logits"}),  # sphere: ĝ_z is projected
    "forward-difference": (ForwardDifference, {"radius": 0.1}),
    "forward-difference-tangent": (ForwardDifference, {"radius": 0.1, "directions": "tangent"}),
}


def perturb(lam: Tensor, offsets: Tensor, space: str) -> Tensor:
    """λ + t (weights), softmax(log λ + t) (logits) or λ ⊙ eᵗ (log-weights), for rows t."""
    if space == "weights":
        return lam + offsets
    moved = lam.log() + offsets
    return torch.softmax(moved, -1) if space == "logits" else moved.exp()


def by_hand(
    kind: type[ZerothOrder],
    space: str,
    radius: float,
    n: int,
    lam: Tensor,
    u: Tensor,
    phi: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """(the points where Φ is evaluated, one weights-space estimate per direction ``[k, m]``):

    single point (n/r)Φ(λ+ru)u, two point (n/2r)(Φ(λ+ru) − Φ(λ−ru))u, forward difference
    (n/r)(Φ(λ+ru) − Φ(λ))u, with n the dimension of the directions' sphere (m, or m − 1 on the
    tangent space); an estimate ĝ made
    in the logits is returned as (ĝ − mean ĝ)/λ, one made in the log-weights as ĝ/λ.
    """
    plus = perturb(lam, radius * u, space)
    if kind is SinglePoint:
        points = plus
        coef = n / radius * phi(points)
    elif kind is TwoPoint:
        points = torch.cat([plus, perturb(lam, -radius * u, space)])
        values = phi(points)
        coef = n / (2 * radius) * (values[: len(u)] - values[len(u) :])
    else:
        points = torch.cat([lam[None], plus])
        values = phi(points)
        coef = n / radius * (values[1:] - values[0])
    estimates = coef[:, None] * u
    if space == "logits":
        estimates = (estimates - estimates.mean(1, keepdim=True)) / lam
    elif space == "log-weights":
        estimates = estimates / lam
    return points, estimates


def from_coordinates(z: Tensor, space: str) -> Tensor:
    """The weights at perturbation coordinates ``z``: z (weights), softmax(z) (logits), eᶻ (log-weights)."""
    if space == "weights":
        return z
    return torch.softmax(z, -1) if space == "logits" else z.exp()


def smoothed_target(
    phi: Callable[[Tensor], Tensor], lam: Tensor, radius: float, space: str, tangent: bool
) -> Tensor:
    r"""What every zeroth-order estimate averages to, in the form it is returned.

    With z the perturbation's coordinates (λ, log λ), all three estimators are unbiased for
    P∇_zΦ_r, the gradient of the ball-smoothed :math:`\Phi_r(z) = \mathbb E_v\,\Phi(\lambda(z + rv))`
    (v uniform in the unit ball of the directions' subspace, P its projector): the sphere-to-ball
    identity :math:`\mathbb E_u[\Phi(z + ru)\,u] = (r/n)\nabla\Phi_r` with E[u] = 0 and u ↦ −u
    symmetry. Returned as the estimates are: as is (weights), P(·)/λ (logits), (·)/λ (log-weights).
    Computed here from exact gradients at 2·20 000 antithetic ball points, so for a quadratic Φ
    it is the exact P∇Φ(λ) (to rounding).
    """
    m = lam.numel()
    generator = torch.Generator().manual_seed(123)
    sphere = torch.randn(20_000, m, generator=generator, dtype=F64)
    if tangent:
        sphere = sphere - sphere.mean(1, keepdim=True)
    sphere = sphere / sphere.norm(dim=1, keepdim=True)
    ball = sphere * torch.rand(20_000, 1, generator=generator, dtype=F64) ** (1 / (m - tangent))
    ball = torch.cat([ball, -ball])
    z = (lam if space == "weights" else lam.log()).detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(phi(from_coordinates(z + radius * ball, space)).mean(), z)
    if tangent or space == "logits":
        grad = grad - grad.mean()
    return grad if space == "weights" else grad / lam


def assert_unbiased(samples: Tensor, target: Tensor) -> None:
    """‖mean − target‖ ≤ 4 standard errors, the standard error from the samples' own spread."""
    spread = float(((samples - samples.mean(0)) ** 2).sum(1).mean())
    error = float((samples.mean(0) - target).norm())
    standard_error = math.sqrt(spread / len(samples))
    assert error <= 4 * standard_error, (error, standard_error, float(target.norm()))


def tangent_projector(m: int = M) -> Tensor:
    return torch.eye(m, dtype=F64) - 1.0 / m


QUADRATIC_PHI = ("main-task", "worst-case-learned")  # criteria linear in f': Φ is quadratic on this problem


def zeroth_order_step(
    estimator_name: str, criterion_name: str, num_directions: int
) -> tuple[Tensor, Callable[[Tensor], Tensor], Callable[[], Tensor]]:
    """One faithful step with a zeroth-order estimator on the quadratic problem at λ = LAM.

    Checks that the recorded estimate is the estimator's formula at the exact values of Φ for the
    directions drawn, the criterion value their mean, and the upper update the one from that
    estimate (the adversary's from the mean over the points). Returns the per-direction estimates,
    Φ, and the estimates' expectation (:func:`smoothed_target`).
    """
    kind, options = ZEROTH_ORDER[estimator_name]
    make_criterion, formula = CRITERIA[criterion_name]
    _, model, opt, closure, lower, logits = quadratic_problem(LAM)
    radius, space = options["radius"], options.get("space", "weights")
    tangent = options.get("directions") == "tangent"
    balancer = marigold(kind(num_directions=num_directions, **options), make_criterion(), logits=logits)
    u, v = upper_variables(balancer)
    directions = next_directions(balancer, LAM)
    record = train_step(model, opt, balancer, closure)
    assert record.hypergradient is not None and record.criterion_value is not None

    before = lower.losses(lower.theta)

    def phi(points: Tensor) -> Tensor:
        return formula(before, lower.sgd_losses(points), v)

    points, samples = by_hand(kind, space, radius, M - tangent, LAM, directions, phi)
    torch.testing.assert_close(record.hypergradient, samples.mean(0), rtol=1e-8, atol=1e-12)
    assert float(record.criterion_value) == pytest.approx(float(phi(points).mean()), rel=1e-9, abs=1e-14)
    decrements = lower.sgd_losses(points) - before
    assert_upper_update(balancer, u, v, before, record.hypergradient, decrements)

    def target() -> Tensor:
        expected = smoothed_target(phi, LAM, radius, space, tangent)
        if criterion_name in QUADRATIC_PHI and space == "weights":  # then it is the exact P∇Φ(λ)
            projector = tangent_projector() if tangent else torch.eye(M, dtype=F64)
            exact = projector @ lower.hypergradient(formula, v, LAM)
            torch.testing.assert_close(expected, exact, rtol=1e-9, atol=1e-13)
        return expected

    return samples, phi, target


@pytest.mark.parametrize("criterion_name", list(CRITERIA))
@pytest.mark.parametrize("estimator_name", list(ZEROTH_ORDER))
def test_zeroth_order_estimate_is_its_formula_at_the_exact_phi(
    estimator_name: str, criterion_name: str
) -> None:
    zeroth_order_step(estimator_name, criterion_name, num_directions=8)


@pytest.mark.parametrize(
    "criterion_name",
    [
        name if name == "worst-case-learned" else pytest.param(name, marks=pytest.mark.slow)
        for name in CRITERIA
    ],
)
@pytest.mark.parametrize("estimator_name", list(ZEROTH_ORDER))
def test_zeroth_order_estimates_average_to_the_hypergradient(
    estimator_name: str, criterion_name: str
) -> None:
    """Over ~1000 evaluations of Φ in one step the mean is within 4 standard errors of P∇Φ_r
    (the exact P∇Φ where Φ is quadratic), on the tangent space for tangent directions."""
    kind, _ = ZEROTH_ORDER[estimator_name]
    draws = 1000 // kind.evaluations_per_direction
    samples, _, target = zeroth_order_step(estimator_name, criterion_name, num_directions=draws)
    assert_unbiased(samples, target())


def test_log_weights_perturbation_for_positive_weights() -> None:
    """Positive weights ω = e^s with ω₀ fixed: the log-weights two-point estimate is its formula at
    the exact Φ, unbiased for ∇_sΦ_r/ω (≈ ∇_ωΦ), and the update is s' = s − lr·ω ⊙ ĝ on the
    trainable entries."""
    _, model, opt, closure, lower, _ = quadratic_problem(LAM)
    make_criterion, formula = CRITERIA["main-task"]
    radius = 0.05
    estimator = TwoPoint(radius=radius, space="log-weights", num_directions=1000)
    parametrization = PositiveWeights(M, init=[1.0, 0.6, 1.7], trainable=[False, True, True])
    balancer = marigold(estimator, make_criterion(), logits=None, parametrization=parametrization)
    s, _ = upper_variables(balancer)
    omega = s.exp()
    directions = next_directions(balancer, omega)
    record = train_step(model, opt, balancer, closure)
    assert record.hypergradient is not None

    before = lower.losses(lower.theta)

    def phi(points: Tensor) -> Tensor:
        return formula(before, lower.sgd_losses(points), None)

    _, samples = by_hand(TwoPoint, "log-weights", radius, M, omega, directions, phi)
    torch.testing.assert_close(record.hypergradient, samples.mean(0), rtol=1e-8, atol=1e-12)
    target = smoothed_target(phi, omega, radius, "log-weights", tangent=False)
    torch.testing.assert_close(target, lower.hypergradient(formula, None, omega), rtol=1e-2, atol=0)
    assert_unbiased(samples, target)
    new_s, _ = upper_variables(balancer)
    mask = torch.tensor([0.0, 1.0, 1.0], dtype=F64)
    expected = s - UPPER_LR * mask * omega * record.hypergradient
    torch.testing.assert_close(new_s, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(record.weights, new_s.exp())


SPREAD_DRAWS = 1000


@pytest.mark.slow
@pytest.mark.parametrize("directions", ["sphere", "tangent"])
@pytest.mark.parametrize("kind", [SinglePoint, TwoPoint, ForwardDifference])
def test_zeroth_order_spread_in_the_faithful_step_matches_the_closed_forms(
    kind: type[ZerothOrder], directions: str
) -> None:
    """One direction per step, many steps from the same state (θ restored, upper lr 0): the
    recorded estimates are independent draws. With SGD on quadratic tasks and a criterion linear
    in f' (the learned worst case, c = ρ), Φ(w) = cᵀ(f(θ − ηGᵀw) − f(θ)) is quadratic with
    H = η²G Q_c Gᵀ, Q_c = Σc_kQ_k."""
    make_criterion, formula = CRITERIA["worst-case-learned"]
    problem, model, opt, closure, lower, logits = quadratic_problem(LAM)
    radius = 0.5 if kind is SinglePoint else 0.1
    balancer = marigold(
        kind(radius=radius, directions=directions), make_criterion(), logits=logits, upper_lr=0.0
    )
    _, v = upper_variables(balancer)
    step = BalancedOptimizer(model, opt, balancer)
    draws = []
    for _ in range(SPREAD_DRAWS):
        record = step.step(closure)
        assert record.hypergradient is not None
        draws.append(record.hypergradient)
        model.load(lower.theta)
    samples = torch.stack(draws)

    before = lower.losses(lower.theta)
    assert v is not None
    coef = torch.softmax(BETA * v / before, 0)
    g = lower.jacobian()
    hessian = ETA**2 * g @ torch.einsum("k,kde->de", coef, problem.q_mat) @ g.T
    projector = tangent_projector() if directions == "tangent" else torch.eye(M, dtype=F64)
    value = float(lower.phi(formula, v, LAM).detach())
    mean, variance = closed_form(
        kind, hessian, lower.hypergradient(formula, v, LAM), value, radius, projector
    )

    error = float((samples.mean(0) - mean).norm())
    assert error <= 4 * math.sqrt(variance / SPREAD_DRAWS)
    squares = ((samples - samples.mean(0)) ** 2).sum(1)
    empirical = float(squares.mean()) * SPREAD_DRAWS / (SPREAD_DRAWS - 1)
    assert abs(empirical - variance) <= 4 * float(squares.std()) / math.sqrt(SPREAD_DRAWS)


def test_perturbed_mode_logits_step_by_hand() -> None:
    """Marigold (the perturbed step), single point in the logits: the real step (Adam) uses
    softmax(log λ + r u), the losses after it give Φ, ĝ = P((n/r)Φ u)/λ, and the upper update."""
    radius = 0.1
    model, opt, closure = mlp_problem(M, seed=2)
    lower = mlp_lower(model, opt, seed=2)
    estimator = SinglePoint(radius=radius, directions="tangent", space="logits")
    make_criterion, formula = CRITERIA["worst-case-learned"]
    balancer = marigold(estimator, make_criterion(), mode=Marigold)
    u, v = upper_variables(balancer)
    before = lower.losses(lower.theta)
    lam = torch.softmax(BETA * u / before, 0)
    directions = next_directions(balancer, lam)
    record = train_step(model, opt, balancer, closure)
    assert record.hypergradient is not None and record.losses_after is not None

    weights = torch.softmax(lam.log() + radius * directions[0], 0)
    torch.testing.assert_close(record.weights, weights, rtol=1e-12, atol=1e-15)
    after = lower.after(weights).detach()
    torch.testing.assert_close(flat(model.parameters()), after, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(record.losses_after, lower.losses(after), rtol=1e-12, atol=1e-15)
    value = formula(before, record.losses_after, v)
    _, samples = by_hand(
        SinglePoint, "logits", radius, M - 1, lam, directions, lambda w: value.expand(len(w))
    )
    torch.testing.assert_close(record.hypergradient, samples[0], rtol=1e-12, atol=1e-15)
    assert float(record.criterion_value) == pytest.approx(float(value), rel=1e-12)
    assert_upper_update(balancer, u, v, before, record.hypergradient, (record.losses_after - before)[None])


# ---- Smoke: float32, dropout, several steps, every estimator × criterion ----

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
    "first-order": lambda: FirstOrder(),
}
SMOKE_CRITERIA: dict[str, Callable[[], Criterion]] = {
    "worst-case-learned": lambda: WorstCaseDecrement(M),
    "worst-case-max": lambda: WorstCaseDecrement(M, adversary="max"),
    "main-task": lambda: MainTaskLoss(M, main=0),
    "function": lambda: FunctionCriterion(lambda before, after: (after / before).sum()),
    "log-decrement": lambda: LogDecrement(M),
}


@pytest.mark.parametrize("criterion_name", list(SMOKE_CRITERIA))
@pytest.mark.parametrize("estimator_name", list(ESTIMATORS))
def test_marigold_trains_with_every_estimator_and_criterion(estimator_name: str, criterion_name: str) -> None:
    """Runs under float32 and dropout for several steps (the numbers are checked above); a pair
    that cannot work is refused when built: FirstOrder needs a criterion with a first-order
    gradient, an estimator through the step a criterion free of the step's weights."""
    model, opt, closure = mlp_problem(M, dropout=0.1, seed=0, dtype=torch.float32, warm_steps=1)
    estimator, criterion = ESTIMATORS[estimator_name](), SMOKE_CRITERIA[criterion_name]()
    if isinstance(estimator, FirstOrder) and not criterion.has_first_order_gradient:
        with pytest.raises(TypeError, match="does not give"):
            MarigoldFaithful(M, estimator=estimator, criterion=criterion)
        return
    if estimator.through_step and criterion.depends_on_weights:
        with pytest.raises(ValueError, match="depends on the step's weights"):
            MarigoldFaithful(M, estimator=estimator, criterion=criterion)
        return
    balancer = MarigoldFaithful(M, estimator=estimator, criterion=criterion, lr=0.05)
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
    balancer = Marigold.paper(M, estimator=SinglePoint(radius=0.1, directions="tangent", space="logits"))
    step = BalancedOptimizer(model, opt, balancer)
    for _ in range(3):
        record = step.step(closure)
        assert float(record.weights.sum()) == pytest.approx(1.0, abs=1e-6)  # softmax(log λ + r u) stays on Δ
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
    with pytest.raises(ValueError, match="SinglePoint with num_directions=1"):
        Marigold(M, estimator=TwoPoint())


def test_default_estimator_is_the_papers_in_both_modes() -> None:
    """The paper's single point with sphere directions and the given radius, whatever the mode
    (Marigold's own default is the first-order estimator, which has no radius)."""
    assert type(Marigold(M).estimator) is FirstOrder
    with pytest.raises(TypeError, match="no radius"):
        Marigold(M, radius=0.01)
    for mode in (MarigoldFaithful, Marigold.paper):
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
