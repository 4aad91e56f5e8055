"""The mathematics of each gradient rule, on the pure functions (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from bilevel_mtl.balancers._simplex import gramian, min_norm_weights, project_simplex
from bilevel_mtl.functional import (
    cagrad_weights,
    graddrop_direction,
    gradient_normalizers,
    imtlg_weights,
    mgda_weights,
    moco_update,
    modo_update,
    nash_bargaining,
    nash_mtl_weights,
    pcgrad_weights,
    sdmgrad_update,
)


def random_jacobian(seed: int, m: int, d: int, rank: int | None = None, shift: float = 0.0) -> Tensor:
    """Rows of different lengths; ``shift`` adds a common component (fewer conflicts)."""
    generator = torch.Generator().manual_seed(seed)
    rank = rank or min(m, d)
    g = torch.randn(m, rank, generator=generator, dtype=torch.float64) @ torch.randn(
        rank, d, generator=generator, dtype=torch.float64
    )
    g = g + shift * torch.randn(d, generator=generator, dtype=torch.float64)
    return g * torch.logspace(-1, 1, m, dtype=torch.float64)[:, None]


jacobians = st.builds(
    random_jacobian,
    seed=st.integers(0, 10_000),
    m=st.integers(2, 7),
    d=st.integers(1, 9),
    shift=st.sampled_from([0.0, 1.0, 3.0]),
)


def on_simplex(w: Tensor) -> None:
    assert float(w.min()) >= 0
    assert abs(float(w.sum()) - 1) < 1e-12


# MGDA ---------------------------------------------------------------------------------


@given(jacobians)
def test_mgda_satisfies_the_kkt_conditions(g: Tensor) -> None:
    w = mgda_weights(g)
    on_simplex(w)
    k = g @ g.T
    kw = k @ w
    value = float(w @ kw)
    scale = float(k.diagonal().max())
    # (Kw)_j >= w'Kw for all j, with equality where w_j > 0.
    assert float((kw - value).min()) >= -1e-10 * scale
    assert float((kw - value)[w > 1e-9].abs().max()) <= 1e-10 * scale


def test_mgda_of_one_conflict_free_pair_and_of_duplicates() -> None:
    orthogonal = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(mgda_weights(orthogonal), torch.tensor([16 / 25, 9 / 25], dtype=torch.float64))
    opposite = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)
    assert float((mgda_weights(opposite) @ opposite).norm()) < 1e-12


def test_mgda_normalizations_follow_sener_and_koltun() -> None:
    g = random_jacobian(0, 4, 6)
    losses = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    norms = g.norm(dim=1)
    expected = {"none": torch.ones(4), "l2": norms, "loss": losses, "loss+": losses * norms}
    for name, value in expected.items():
        torch.testing.assert_close(gradient_normalizers(g, losses, name), value.to(torch.float64))
        # The weights are MGDA's on the normalised gradients (applied to the raw losses).
        normalised = g / value.to(torch.float64)[:, None]
        torch.testing.assert_close(mgda_weights(g, losses, name), min_norm_weights(gramian(normalised)))
    with pytest.raises(ValueError, match="losses"):
        mgda_weights(g, None, "loss")
    with pytest.raises(ValueError, match="> 0"):
        mgda_weights(g, -losses, "loss+")
    with pytest.raises(ValueError, match="normalization"):
        mgda_weights(g, losses, "l1")


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(2, 3, 1), torch.tensor([[1.0, float("nan")]])])
def test_rules_reject_bad_jacobians(bad: Tensor) -> None:
    for rule in (mgda_weights, pcgrad_weights, imtlg_weights, nash_mtl_weights, cagrad_weights):
        with pytest.raises(ValueError):
            rule(bad)


# PCGrad -------------------------------------------------------------------------------


def pcgrad_reference(g: Tensor, generator: torch.Generator) -> Tensor:
    """Algorithm 1 of Yu et al. on vectors (the rule works on the Gram matrix)."""
    m = g.shape[0]
    projected = []
    for i in range(m):
        current = g[i].clone()
        for j in torch.randperm(m, generator=generator).tolist():
            if j != i and float(current @ g[j]) < 0:
                current = current - (current @ g[j]) / (g[j] @ g[j]) * g[j]
        projected.append(current)
    return torch.stack(projected).mean(0)


@pytest.mark.parametrize("seed", range(6))
def test_pcgrad_equals_the_vector_algorithm(seed: int) -> None:
    g = random_jacobian(seed, 2 + seed % 5, 6)
    ours = pcgrad_weights(g, torch.Generator().manual_seed(seed)) @ g
    torch.testing.assert_close(ours, pcgrad_reference(g, torch.Generator().manual_seed(seed)))


@given(jacobians)
def test_pcgrad_leaves_no_conflict_between_two_tasks(g: Tensor) -> None:
    pair = g[:2]
    d = pcgrad_weights(pair) @ pair
    assert float((pair @ d).min()) >= -1e-9 * float(pair.norm(dim=1).max()) ** 2
    if float(pair[0] @ pair[1]) >= 0:
        torch.testing.assert_close(d, pair.mean(0))


# CAGrad -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_cagrad_direction_is_optimal_in_its_ball(seed: int, c: float) -> None:
    g = random_jacobian(seed, 3, 3, shift=0.5)
    mean = g.mean(0)
    radius = c * float(mean.norm())
    d = cagrad_weights(g, c, rescale="none") @ g
    worst = float((g @ d).min())
    # Feasible: on the ball's boundary (the constraint is active when g_w != 0).
    assert abs(float((d - mean).norm()) - radius) <= 1e-6 * radius
    # No point of the ball does better in its worst task (dense sampling of the sphere).
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(50_000, 3, generator=generator, dtype=torch.float64)
    candidates = mean + radius * directions / directions.norm(dim=1, keepdim=True)
    assert float((candidates @ g.T).min(dim=1).values.max()) <= worst + 1e-6 * float(g.norm()) ** 2
    # The active tasks are those the dual weights use (complementary slackness).
    from bilevel_mtl.functional import cagrad_dual

    dual = cagrad_dual(g @ g.T, c)
    assert float(((g @ d) - worst)[dual > 1e-5].abs().max()) <= 1e-5 * float(g.norm()) ** 2


def test_cagrad_limits_and_rescaling() -> None:
    g = random_jacobian(1, 4, 5)
    torch.testing.assert_close(cagrad_weights(g, 0.0), torch.full((4,), 0.25, dtype=torch.float64))
    plain = cagrad_weights(g, 0.4, "none")
    torch.testing.assert_close(cagrad_weights(g, 0.4, "1+c^2"), plain / 1.16)
    torch.testing.assert_close(cagrad_weights(g, 0.4, "1+c"), plain / 1.4)
    torch.testing.assert_close(cagrad_weights(3.0 * g, 0.4), cagrad_weights(g, 0.4), atol=1e-7, rtol=1e-6)
    with pytest.raises(ValueError, match="c must"):
        cagrad_weights(g, -1.0)


# IMTL-G -------------------------------------------------------------------------------


@given(jacobians)
def test_imtlg_projections_are_equal(g: Tensor) -> None:
    m, d = g.shape
    if d < m:  # equal projections need independent gradients
        g = torch.cat([g, torch.eye(m, dtype=g.dtype)], dim=1)
    w = imtlg_weights(g)
    assert abs(float(w.sum()) - 1) < 1e-9
    projections = (g @ (w @ g)) / g.norm(dim=1)
    assert float(projections.max() - projections.min()) <= 1e-8 * float(projections.abs().max())


def test_imtlg_direction_ignores_per_task_scales() -> None:
    g = random_jacobian(2, 4, 6)
    scaled = g * torch.tensor([[0.1], [5.0], [1.0], [30.0]], dtype=torch.float64)
    d, ds = imtlg_weights(g) @ g, imtlg_weights(scaled) @ scaled
    torch.testing.assert_close(ds / ds.norm(), d / d.norm())


# Nash-MTL -----------------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(2, 6), st.integers(2, 8))
def test_nash_bargaining_condition(seed: int, m: int, d: int) -> None:
    g = random_jacobian(seed, m, d, shift=4.0)
    k = g @ g.T
    alpha = nash_bargaining(k)
    if float(alpha.abs().max()) == 0:  # Pareto-stationary: 0 is in the hull
        assert float((min_norm_weights(k) @ g).norm()) <= 1e-8 * float(g.norm(dim=1).max())
        return
    assert float(alpha.min()) > 0
    residual = alpha * (k @ alpha) - 1
    roundoff = 1e-12 * alpha * (k.abs() @ alpha)
    assert float((residual.abs() - roundoff).max()) <= 1e-9


def test_nash_is_invariant_to_task_scales_and_clips_to_max_norm() -> None:
    g = random_jacobian(3, 3, 5, shift=4.0)
    c = torch.tensor([0.2, 3.0, 10.0], dtype=torch.float64)
    alpha, alpha_scaled = nash_bargaining(g @ g.T), nash_bargaining((c[:, None] * g) @ (c[:, None] * g).T)
    torch.testing.assert_close(alpha_scaled, alpha / c)
    free = nash_bargaining(g @ g.T) @ g
    # the paper's equation on the raw Gram matrix: sum_i alpha_i (K alpha)_i = m = |d|^2
    torch.testing.assert_close(free.norm(), torch.tensor(math.sqrt(3.0), dtype=torch.float64))
    for max_norm in (0.0, 1e-3, 1e6):
        d = nash_mtl_weights(g, max_norm) @ g
        expected = free if max_norm == 0 or float(free.norm()) <= max_norm else free * max_norm / free.norm()
        torch.testing.assert_close(d, expected)


def test_nash_is_zero_at_pareto_stationary_points() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    g = torch.cat([g, -g[2:]])
    assert float(nash_mtl_weights(g).abs().max()) == 0


# GradDrop -----------------------------------------------------------------------------


def test_graddrop_keeps_positive_signs_with_probability_purity() -> None:
    g = torch.tensor([[3.0], [-1.0]], dtype=torch.float64)  # P = (1 + 2/4)/2 = 0.75
    generator = torch.Generator().manual_seed(0)
    kept = [float(graddrop_direction(g, generator)[0]) * 2 for _ in range(4000)]
    assert set(kept) == {3.0, -1.0}
    frequency = sum(v == 3.0 for v in kept) / len(kept)
    assert abs(frequency - 0.75) < 4 * math.sqrt(0.75 * 0.25 / len(kept))


def test_graddrop_leak_one_is_ls_and_batch_masks_are_shared() -> None:
    g = random_jacobian(0, 3, 8)
    torch.testing.assert_close(graddrop_direction(g, leak=1.0), g.mean(0))
    # Representation mode: [m, batch, features]; one mask per feature, shared over the batch.
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    inputs = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    out = graddrop_direction(grads, torch.Generator().manual_seed(1), inputs=inputs)
    signed = (grads * inputs.sign()).sum(1)
    purity = 0.5 * (1 + signed.sum(0) / signed.abs().sum(0))
    draw = torch.rand(purity.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep = ((purity > draw) & (signed > 0)) | ((purity < draw) & (signed < 0))
    torch.testing.assert_close(out, (keep[:, None, :] * grads).sum(0) / 3)
    with pytest.raises(ValueError, match="inputs"):
        graddrop_direction(grads, inputs=inputs[:, :2])
    with pytest.raises(ValueError, match="leak"):
        graddrop_direction(g, leak=2.0)


# MoCo, MoDo, SDMGrad ------------------------------------------------------------------


def test_moco_step_formula() -> None:
    g = random_jacobian(0, 3, 4)
    tracked = random_jacobian(1, 3, 4)
    lam = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    new_tracked, new_lam = moco_update(tracked, lam, g, beta=0.3, gamma=0.01, rho=0.1)
    expected_tracked = tracked - 0.3 * (tracked - g)
    torch.testing.assert_close(new_tracked, expected_tracked)
    k = expected_tracked @ expected_tracked.T
    torch.testing.assert_close(new_lam, project_simplex(lam - 0.01 * (k @ lam + 0.1 * lam)))
    losses = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    normalised, _ = moco_update(torch.zeros_like(g), lam, g, beta=1.0, gamma=0.01, losses=losses)
    torch.testing.assert_close(normalised.norm(dim=1), losses, atol=1e-7, rtol=1e-7)


def test_modo_step_formula_and_ls_limit() -> None:
    g1, g2 = random_jacobian(0, 3, 5), random_jacobian(1, 3, 5)
    lam = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expected = project_simplex(lam - 0.01 * (g1 @ g2.T @ lam + 0.1 * lam))
    torch.testing.assert_close(modo_update(lam, g1, g2, gamma=0.01, rho=0.1), expected)
    uniform = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(modo_update(uniform, g1, g2, gamma=1e-12, rho=0.0), uniform)
    with pytest.raises(ValueError, match="shape"):
        modo_update(lam, g1, g2[:, :2])


def test_sdmgrad_inner_loop_is_projected_momentum_sgd() -> None:
    g1 = random_jacobian(0, 3, 5, shift=1.0)
    g2 = g1 + 0.1 * random_jacobian(1, 3, 5)  # two noisy samples of the same gradients
    start = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    ours = sdmgrad_update(start, g1, g2, lam=0.3, num_iterations=7, lr=0.5, momentum=0.5)
    k = g1 @ g2.T
    k = k / k.diagonal().clamp(min=0).sqrt().mean() ** 2
    w = start.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=0.5, momentum=0.5)
    for _ in range(7):
        optimizer.zero_grad()
        w.grad = k @ w.detach() + 0.3 * k.mean(1)
        optimizer.step()
        with torch.no_grad():
            w.copy_(project_simplex(w))
    torch.testing.assert_close(ours, w.detach())
    torch.testing.assert_close(sdmgrad_update(start, 7 * g1, 7 * g2), sdmgrad_update(start, g1, g2))
