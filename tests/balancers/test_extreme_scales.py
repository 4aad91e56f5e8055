"""Gram-based rules at extreme gradient scales, with optimality conditions as the oracles.

Row norms span 1e-3..1e3 and 1e-8..1e8; rows are random, nearly colinear, or contain an
exactly conflicting pair. The assertions are scale-free: MGDA's KKT conditions relative to
the min-norm value, Nash-MTL's bargaining condition :math:`\\alpha_i(K\\alpha)_i = 1`,
IMTL-G's equal projections, CAGrad's optimality in its ball.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from bilevel_mtl.balancers._simplex import gramian
from bilevel_mtl.functional import cagrad_dual, cagrad_weights, imtlg_weights, mgda_weights, nash_mtl_weights

EPS = torch.finfo(torch.float64).eps
KINDS = ("random", "colinear", "conflict")


def scaled_jacobian(seed: int, m: int, d: int, spread: float, kind: str) -> Tensor:
    """Unit rows (random, nearly colinear, or with rows 0 and 1 opposite) times norms
    ``10**e`` with exponents spread evenly over ``[-spread, spread]`` in random order."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(m, d, generator=generator, dtype=torch.float64)
    if kind == "colinear":
        rows = rows[:1] + 1e-6 * rows
    elif kind == "conflict":
        rows[1] = -rows[0]
    rows = rows / rows.norm(dim=1, keepdim=True)
    exponents = torch.linspace(-spread, spread, m, dtype=torch.float64)[
        torch.randperm(m, generator=generator)
    ]
    return rows * (10.0**exponents)[:, None]


def jacobians(
    kinds: tuple[str, ...] = KINDS, spreads: tuple[float, ...] = (3.0, 8.0), square: bool = False
) -> st.SearchStrategy[Tensor]:
    dims = st.integers(2, 6).flatmap(lambda m: st.tuples(st.just(m), st.integers(m if square else 1, m + 4)))
    return st.builds(
        lambda seed, md, spread, kind: scaled_jacobian(seed, md[0], md[1], spread, kind),
        st.integers(0, 10_000),
        dims,
        st.sampled_from(spreads),
        st.sampled_from(kinds),
    )


# MGDA: w in the simplex, (Kw)_j >= w'Kw for every j, equality on the support ------------


@given(jacobians())
def test_mgda_kkt_conditions_hold_relative_to_the_min_norm_value(g: Tensor) -> None:
    w = mgda_weights(g)
    assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) <= 1e-12
    k = gramian(g)
    kw = k @ w
    value = float(w @ kw)
    slack = 1e-9 * value + 1e3 * EPS * float((k.abs() @ w).max())
    assert float((kw - value).min()) >= -slack
    assert float((kw - value)[w > 1e-9].abs().max()) <= slack


@given(st.integers(0, 10_000), st.integers(1, 5), st.floats(-8, 8), st.floats(-8, 8))
def test_mgda_of_two_tasks_is_the_closed_form_at_any_scale(seed: int, d: int, e1: float, e2: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(2, d, generator=generator, dtype=torch.float64)
    g = g / g.norm(dim=1, keepdim=True) * torch.tensor([[10.0**e1], [10.0**e2]], dtype=torch.float64)
    difference = g[0] - g[1]
    length2 = float(difference @ difference)
    w0 = (
        float((-(difference @ g[1]) / length2).clamp(0, 1)) if length2 > 0 else 1.0
    )  # argmin |w g0 + (1-w) g1|
    expected = torch.tensor([w0, 1 - w0], dtype=torch.float64)
    # weights hold eps absolutely, so d is exact up to eps times the longest gradient
    atol = 100 * EPS * float(g.norm(dim=1).max())
    torch.testing.assert_close(mgda_weights(g) @ g, expected @ g, rtol=1e-9, atol=atol)


def test_mgda_finds_a_short_hull_beside_a_long_gradient() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1e7]], dtype=torch.float64)
    w = mgda_weights(g)
    torch.testing.assert_close(w, torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64))
    torch.testing.assert_close(w @ g, torch.tensor([0.2, 0.4], dtype=torch.float64))


# Nash-MTL: alpha_i (K alpha)_i = 1, so |d| = sqrt(m) before clipping -----------------------


@given(jacobians(kinds=("random", "colinear"), square=True))
def test_nash_bargaining_condition_at_any_scale(g: Tensor) -> None:
    m = g.shape[0]
    alpha = nash_mtl_weights(g, max_norm=0.0)
    assert float(alpha.min()) > 0
    k = gramian(g)
    residual = alpha * (k @ alpha) - 1
    roundoff = 1e3 * EPS * alpha * (k.abs() @ alpha)
    assert float((residual.abs() - roundoff).max()) <= 1e-8
    torch.testing.assert_close((alpha @ g).norm(), torch.tensor(math.sqrt(m), dtype=torch.float64))
    clipped = nash_mtl_weights(g, max_norm=1.0) @ g
    torch.testing.assert_close(clipped, alpha @ g / math.sqrt(m))


@given(jacobians(kinds=("random",), square=True), st.lists(st.floats(-6, 6), min_size=6, max_size=6))
def test_nash_weights_scale_inversely_with_each_task(g: Tensor, exponents: list[float]) -> None:
    c = 10.0 ** torch.tensor(exponents[: g.shape[0]], dtype=torch.float64)
    alpha, alpha_scaled = nash_mtl_weights(g, 0.0), nash_mtl_weights(c[:, None] * g, 0.0)
    torch.testing.assert_close(alpha_scaled, alpha / c, rtol=1e-7, atol=0)


@pytest.mark.parametrize(
    ("g", "expected"),
    [
        (0.1 * torch.eye(2, dtype=torch.float64), [0.7071067811865476] * 2),
        (torch.tensor([[1e-6, 0.0], [0.0, 1.0]], dtype=torch.float64), [0.7071067811865476] * 2),
    ],
    ids=["small-gradients", "one-tiny-gradient"],
)
def test_nash_update_of_the_paper(g: Tensor, expected: list[float]) -> None:
    """Orthogonal gradients: alpha_i = 1/|g_i|, d = (1, 1), clipped to norm 1."""
    torch.testing.assert_close(nash_mtl_weights(g) @ g, torch.tensor(expected, dtype=torch.float64))


@given(jacobians(kinds=("conflict",)))
def test_nash_is_zero_when_two_tasks_conflict_exactly(g: Tensor) -> None:
    assert float(nash_mtl_weights(g).abs().max()) == 0


# IMTL-G: d'g_i/|g_i| equal for every task -------------------------------------------------


@given(jacobians(kinds=("random", "colinear"), square=True))
def test_imtlg_projections_are_equal_at_any_scale(g: Tensor) -> None:
    w = imtlg_weights(g)
    assert abs(float(w.sum()) - 1) <= 1e-9
    d = w @ g
    projections = (g @ d) / g.norm(dim=1)
    assert float(projections.max() - projections.min()) <= 1e-7 * float(projections.abs().max())


# CAGrad: optimal in its ball -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spread", [1.0, 3.0])
def test_cagrad_is_optimal_in_its_ball_across_scales(seed: int, spread: float) -> None:
    c = 0.5
    g = scaled_jacobian(seed, 3, 3, spread, "random")
    mean = g.mean(0)
    radius = c * float(mean.norm())
    d = cagrad_weights(g, c, rescale="none") @ g
    assert abs(float((d - mean).norm()) - radius) <= 1e-6 * radius
    worst = float((g @ d).min())
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(50_000, 3, generator=generator, dtype=torch.float64)
    candidates = mean + radius * directions / directions.norm(dim=1, keepdim=True)
    best = float((candidates @ g.T).min(dim=1).values.max())
    assert best <= worst + 1e-4 * abs(worst) + 1e-12 * float(g.norm()) ** 2
    dual = cagrad_dual(gramian(g), c)
    assert abs(float(dual.sum()) - 1) <= 1e-9


# float32 at the ends of its range --------------------------------------------------------


def test_gramian_of_float32_rows_neither_overflows_nor_underflows() -> None:
    g64 = scaled_jacobian(0, 3, 4, 18.0, "random")
    k = gramian(g64.float())
    exact = g64 @ g64.T
    assert bool(torch.isfinite(k).all())
    norms = exact.diagonal().sqrt()
    assert bool(((k - exact).abs() <= 1e-5 * torch.outer(norms, norms)).all())  # float32 accuracy per entry
    w = mgda_weights(g64.float())
    assert bool(torch.isfinite(w).all()) and abs(float(w.sum()) - 1) <= 1e-6
