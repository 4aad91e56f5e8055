"""Zeroth-order estimators on a quadratic Φ: mean and total variance against the closed forms (DESIGN §5).

For Φ(λ) = ½λᵀHλ + bᵀλ + c, a = ∇Φ(λ), Φ₀ = Φ(λ) and directions uniform on the unit
sphere of an n-dimensional subspace with projector P (sphere: P = I, n = m; tangent:
P = I − 11ᵀ/m, n = m − 1), every estimator is unbiased for Pa and, with
q = (tr(PH)² + 2 tr((PHP)²)) / (n(n+2)) = E[(uᵀHu)²],

    single point:       (n/r)² [Φ₀² + r²|Pa|²/n + r² Φ₀ tr(PH)/n + r⁴ q/4] − |Pa|²
    forward difference: (n − 1)|Pa|² + n² r² q / 4
    two point:          (n − 1)|Pa|².
"""

from __future__ import annotations

import math

import pytest
import torch
from _estimator_helpers import QuadraticObjective, closed_form
from hypothesis import given, settings
from hypothesis import strategies as st

from bilevel_mtl.estimators import ForwardDifference, SinglePoint, TwoPoint, ZerothOrder

NUM_SAMPLES = 40_000
Tensor = torch.Tensor


@pytest.mark.parametrize("directions", ["sphere", "tangent"])
@pytest.mark.parametrize("kind", [SinglePoint, TwoPoint, ForwardDifference])
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    m=st.integers(min_value=2, max_value=12),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    radius=st.sampled_from([1e-2, 0.1, 0.5, 1.0]),
    constant=st.floats(min_value=-2.0, max_value=2.0),
    curvature=st.floats(min_value=0.0, max_value=5.0),
)
def test_mean_and_total_variance_match_closed_forms(
    kind: type[ZerothOrder],
    directions: str,
    m: int,
    seed: int,
    radius: float,
    constant: float,
    curvature: float,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    root = torch.randn(m, m, generator=gen, dtype=torch.float64)
    hessian = curvature * (root + root.T) / 2  # symmetric, indefinite in general
    linear = torch.randn(m, generator=gen, dtype=torch.float64)
    lam = torch.softmax(torch.randn(m, generator=gen, dtype=torch.float64), dim=0)
    objective = QuadraticObjective(hessian, linear, constant)

    estimator = kind(radius=radius, directions=directions, num_directions=NUM_SAMPLES)
    u = estimator.sample(lam, gen)
    samples = estimator.samples(u, objective.evaluate(estimator.points(lam, u)), lam)
    assert samples.shape == (NUM_SAMPLES, m)

    eye = torch.eye(m, dtype=torch.float64)
    projector = eye if directions == "sphere" else eye - 1.0 / m
    mean, variance = closed_form(
        kind, hessian, objective.gradient(lam), float(objective(lam)), radius, projector
    )

    empirical_mean = samples.mean(dim=0)
    standard_error = math.sqrt(variance / NUM_SAMPLES)
    scale = float(mean.norm()) + 1e-12
    assert float((empirical_mean - mean).norm()) <= 4 * standard_error + 1e-9 * scale

    centred = samples - empirical_mean
    empirical_variance = float((centred**2).sum(dim=1).mean()) * NUM_SAMPLES / (NUM_SAMPLES - 1)
    assert abs(empirical_variance - variance) <= 0.05 * variance + 1e-9 * scale**2


@settings(max_examples=6, deadline=None, derandomize=True)
@given(m=st.integers(min_value=2, max_value=10), seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_logits_space_two_point_is_unbiased_for_the_softmax_pullback(m: int, seed: int) -> None:
    """Perturbing the softmax logits: E[y] = ∇Φ − (λᵀ∇Φ)1 up to O(r²), so the tangent parts agree."""
    gen = torch.Generator().manual_seed(seed)
    root = torch.randn(m, m, generator=gen, dtype=torch.float64)
    objective = QuadraticObjective(
        (root + root.T) / 2, torch.randn(m, generator=gen, dtype=torch.float64), 0.3
    )
    lam = torch.softmax(torch.randn(m, generator=gen, dtype=torch.float64), dim=0)
    estimator = TwoPoint(radius=1e-3, directions="tangent", num_directions=NUM_SAMPLES, space="logits")
    u = estimator.sample(lam, gen)
    samples = estimator.samples(u, objective.evaluate(estimator.points(lam, u)), lam)
    grad = objective.gradient(lam)
    target = grad - (lam @ grad)
    spread = float(((samples - samples.mean(0)) ** 2).sum(1).mean())
    error = float((samples.mean(0) - target).norm())
    assert error <= 4 * math.sqrt(spread / NUM_SAMPLES) + 1e-4 * float(target.norm())
