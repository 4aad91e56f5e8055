"""The paper's single-point estimator against closed-form moments on quadratics (DESIGN §5)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bilevel_mtl.criteria import FunctionCriterion
from bilevel_mtl.estimators import SinglePoint, UpperObjective


def _quadratic(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, m, generator=g, dtype=torch.float64)
    h = (a + a.T) / 2
    b = torch.randn(m, generator=g, dtype=torch.float64)
    c = float(torch.randn((), generator=g, dtype=torch.float64))
    lam = torch.softmax(torch.randn(m, generator=g, dtype=torch.float64), 0)
    return h, b, c, lam


def _phi(h: torch.Tensor, b: torch.Tensor, c: float, w: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.einsum("...i,ij,...j->...", w, h, w) + w @ b + c


def _moments(m: int, kind: str, h: torch.Tensor, b: torch.Tensor, c: float, lam: torch.Tensor, r: float):
    """Exact mean and total variance of (n/r) Φ(λ+ru) u, u uniform on the n-sphere of the subspace."""
    if kind == "tangent":
        q, _ = torch.linalg.qr(torch.eye(m, dtype=torch.float64) - 1.0 / m)
        basis = q[:, : m - 1]  # orthonormal basis of {Σv = 0}
    else:
        basis = torch.eye(m, dtype=torch.float64)
    n = basis.shape[1]
    hs = basis.T @ h @ basis
    grad = basis.T @ (h @ lam + b)
    phi0 = float(_phi(h, b, c, lam))
    tr, tr2 = float(hs.trace()), float((hs @ hs).trace())
    q4 = (tr**2 + 2 * tr2) / (n * (n + 2))
    a2 = float(grad @ grad)
    total_var = (n / r) ** 2 * (phi0**2 + r**2 * a2 / n + r**2 * phi0 * tr / n + r**4 * q4 / 4) - a2
    return basis @ grad, total_var


@given(
    m=st.integers(2, 7),
    seed=st.integers(0, 10_000),
    log_r=st.floats(math.log(1e-2), math.log(1.0)),
    kind=st.sampled_from(["sphere", "tangent"]),
)
def test_single_point_mean_and_variance_match_closed_forms(
    m: int, seed: int, log_r: float, kind: str
) -> None:
    r = math.exp(log_r)
    h, b, c, lam = _quadratic(m, seed)
    n_samples = 20_000
    estimator = SinglePoint(radius=r, directions=kind, num_directions=n_samples)
    generator = torch.Generator().manual_seed(seed)
    directions = estimator.sample(lam, generator)
    values = _phi(h, b, c, lam + r * directions)
    samples = torch.stack(
        [estimator.combine(u[None], v[None]) for u, v in zip(directions, values, strict=True)]
    )
    mean, total_var = _moments(m, kind, h, b, c, lam, r)

    # The averaged estimate (the estimator's own reduction) is unbiased ...
    averaged = estimator.combine(directions, values)
    torch.testing.assert_close(averaged, samples.mean(0))
    assert float((averaged - mean).norm()) <= 4 * math.sqrt(total_var / n_samples)
    # ... with the closed-form total variance.
    empirical_var = float(((samples - samples.mean(0)) ** 2).sum(1).mean())
    assert empirical_var == pytest.approx(total_var, rel=0.05)


def test_estimate_evaluates_the_objective_at_the_perturbed_weights() -> None:
    m, r = 4, 0.1
    h, b, c, lam = _quadratic(m, 3)
    criterion = FunctionCriterion(lambda before, after: after.sum())
    objective = UpperObjective(criterion, torch.ones(m), lambda w: _phi(h, b, c, w).expand(m) / m)
    estimator = SinglePoint(radius=r, num_directions=3)
    estimate = estimator.estimate(objective, lam, torch.Generator().manual_seed(7))
    directions = estimator.sample(lam, torch.Generator().manual_seed(7))
    phi = _phi(h, b, c, lam + r * directions)
    expected = (m / r) * (phi[:, None] * directions).mean(0)
    torch.testing.assert_close(estimate.gradient, expected)
    # The values it returns are Φ at the three perturbed points, in the order of the directions.
    assert len(estimate.values) == 3
    torch.testing.assert_close(torch.stack(estimate.values), phi)


def test_tangent_directions_lie_in_the_simplex_tangent_space() -> None:
    u = SinglePoint(directions="tangent", num_directions=50).sample(
        torch.full((5,), 0.2), torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(u.sum(1), torch.zeros(50), atol=1e-6, rtol=0)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(50))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": 0.0}, "radius"),
        ({"radius": -1.0}, "radius"),
        ({"radius": float("nan")}, "radius"),
        ({"directions": "cube"}, "directions"),
        ({"num_directions": 0}, "num_directions"),
    ],
)
def test_bad_hyper_parameters_are_refused(kwargs: dict[str, float | str | int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SinglePoint(**kwargs)  # type: ignore[arg-type]


def test_tangent_directions_need_two_tasks() -> None:
    with pytest.raises(ValueError, match="at least 2 tasks"):
        SinglePoint(directions="tangent").sample(torch.ones(1), torch.Generator())
