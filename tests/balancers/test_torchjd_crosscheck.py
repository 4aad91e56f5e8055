"""Agreement with TorchJD's weightings on random Jacobians of controlled rank and scale (test extra)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bilevel_mtl.functional import graddrop_direction, imtlg_weights, mgda_weights, pcgrad_weights

aggregation = pytest.importorskip("torchjd.aggregation")

SHAPES = [(2, 5, 2), (3, 7, 3), (3, 7, 2), (5, 4, 4), (6, 12, 3), (8, 20, 8)]
SCALES = [1e-3, 1.0, 1e3]


def jacobian(m: int, d: int, rank: int, scale: float, seed: int) -> Tensor:
    """``m × d`` of the given rank, rows of very different lengths, times ``scale`` (float64)."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(m, rank, generator=generator, dtype=torch.float64)
    right = torch.randn(rank, d, generator=generator, dtype=torch.float64)
    lengths = torch.logspace(-1, 1, m, dtype=torch.float64)[torch.randperm(m, generator=generator)]
    return scale * lengths[:, None] * (left @ right)


@pytest.mark.parametrize(("m", "d", "rank"), SHAPES)
@pytest.mark.parametrize("scale", SCALES)
def test_mgda_is_at_least_as_good_as_torchjds_frank_wolfe(m: int, d: int, rank: int, scale: float) -> None:
    g = jacobian(m, d, rank, scale, seed=m * d + rank)
    ours = mgda_weights(g) @ g
    theirs = aggregation.MGDAWeighting(epsilon=1e-8, max_iters=2000)(g @ g.T) @ g
    norm_ours, norm_theirs = float(ours.norm()), float(theirs.norm())
    longest = float(g.norm(dim=1).max())
    assert norm_ours <= norm_theirs + 1e-9 * longest
    assert norm_theirs - norm_ours <= 1e-3 * longest


@pytest.mark.parametrize(("m", "d", "rank"), SHAPES)
@pytest.mark.parametrize("scale", SCALES)
def test_pcgrad_matches_torchjd_with_the_same_random_orders(m: int, d: int, rank: int, scale: float) -> None:
    g = jacobian(m, d, rank, scale, seed=7 * m + rank)
    torch.manual_seed(11)
    theirs = aggregation.PCGradWeighting()(g @ g.T)
    ours = m * pcgrad_weights(g, torch.Generator().manual_seed(11))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("m", "d", "rank"), SHAPES)
@pytest.mark.parametrize("scale", SCALES)
def test_imtlg_matches_torchjd(m: int, d: int, rank: int, scale: float) -> None:
    g = jacobian(m, d, rank, scale, seed=3 * m + rank)
    theirs = aggregation.IMTLGWeighting()(g @ g.T)
    ours = imtlg_weights(g)
    torch.testing.assert_close(ours @ g, theirs @ g, rtol=1e-6, atol=1e-9 * scale)


@pytest.mark.parametrize(("m", "d", "rank"), SHAPES)
def test_graddrop_matches_torchjd_with_the_same_draws(m: int, d: int, rank: int) -> None:
    g = jacobian(m, d, rank, 1.0, seed=5 * m + rank)
    torch.manual_seed(3)
    theirs = aggregation.GradDrop()(g)
    ours = m * graddrop_direction(g, torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
